"""The prediction service, as a real server on localhost: API, bad uploads, the page in Chromium."""
import io
import json
import os
import shutil
import socket
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

# The service client and the decompression-bomb builder are development helpers
# shared with benchmarks/serve.py.
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def service(trained_model, tmp_path_factory):
    from service_client import launch

    log = tmp_path_factory.mktemp("service") / "serve.log"
    process, client = launch(trained_model, extra_args=["--max-upload-mb", "2"], log_path=log)
    yield client
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def predictor(trained_model):
    from covidspark.serving.predictor import Predictor

    return Predictor(trained_model)


def _fixture_image(fixture_dir, label="covid", index=0):
    folder = os.path.join(fixture_dir, label)
    path = os.path.join(folder, sorted(os.listdir(folder))[index])
    with open(path, "rb") as f:
        return path, f.read()


def test_predict_explain_and_health(service, predictor, fixture_dir):
    from PIL import Image

    health = service.health()
    assert health["status"] == "ok" and health["classifier"] == "lr"
    assert health["model_id"] == predictor.model_id and health["pretrained"] is False
    for label in ("covid", "normal"):
        path, data = _fixture_image(fixture_dir, label)
        answer = service.predict(data, os.path.basename(path))
        expected = predictor.predict(data)
        assert answer["label"] == expected["label"] and answer["threshold"] == 0.4
        np.testing.assert_allclose([answer["probabilities"][k] for k in predictor.labels],
                                   [expected["probabilities"][k] for k in predictor.labels],
                                   atol=1e-5)
        assert answer["model_id"] == predictor.model_id and answer["timing_ms"]["features"] > 0
    status, headers, png, _ = service.upload("/explain", data)
    assert status == 200 and headers["content-type"] == "image/png"
    explained = json.loads(headers["x-covidspark-prediction"])
    assert explained["method"] == "gradcam" and explained["explained"] == explained["label"]
    assert Image.open(io.BytesIO(png)).size == Image.open(path).size  # fixture sides <= 1024
    status, _, page, _ = service.request("GET", "/")
    assert status == 200 and b"not a diagnostic device" in page


def test_bad_uploads_get_4xx_with_a_reason_and_the_service_keeps_serving(service, fixture_dir):
    from service_client import decompression_bomb_png, multipart_body

    path, good = _fixture_image(fixture_dir)
    cases = {
        "oversize": (lambda: service.upload("/predict", b"\0" * (2 * 2 ** 20 + 1)), 413,
                     "exceeds the limit"),
        "non-image": (lambda: service.upload("/predict", b"hello, not an image" * 50), 422,
                      "not a decodable image"),
        "empty": (lambda: service.upload("/predict", b""), 422, "empty file"),
        "truncated": (lambda: service.upload("/predict", good[: len(good) // 3]), 422,
                      "truncated|not a decodable image"),
        "bomb": (lambda: service.upload("/predict", decompression_bomb_png()), 422,
                 "decompression bomb|exceeds"),
        "wrong content type": (lambda: service.request("POST", "/predict", good,
                                                       {"Content-Type": "image/png"}), 415,
                               "multipart/form-data"),
        "missing field": (lambda: service.upload("/predict", good, field="image"), 400,
                          r"no file in the 'file' field of the upload \(it has 'image'\)"),
        "no content type": (lambda: service.request("POST", "/predict", good, {}), 415,
                            "got no Content-Type$"),
        "malformed multipart": (lambda: service.request(
            "POST", "/predict", b"--x\r\ngarbage", {"Content-Type": "multipart/form-data"}),
            400, "multipart"),
        "unknown class": (lambda: service.upload("/explain?label=flu", good), 400,
                          "Unknown class 'flu'"),
    }
    for name, (send, status, reason) in cases.items():
        got, _, payload, _ = send()
        answer = json.loads(payload)
        assert got == status, (name, answer)
        assert answer["status"] == status and __import__("re").search(reason, answer["error"]), \
            (name, answer)
        assert service.health()["status"] == "ok"
    # A declared size over the limit is refused before the body is read: the answer
    # comes although the body never arrives.
    body, header = multipart_body(good)
    with socket.create_connection((service.host, service.port), timeout=20) as raw:
        raw.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {header}\r\n"
                    f"Content-Length: {10 ** 9}\r\n\r\n".encode() + body[:1000])
        assert raw.recv(200).startswith(b"HTTP/1.1 413")
    counts = service.health()
    assert counts["refused"] >= len(cases) and counts["errors"] == 0
    assert service.predict(good)["label"] in ("normal", "covid")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_upload_page_in_headless_chromium(service, predictor, fixture_dir, tmp_path):
    """Upload a fixture X-ray on the page; the label and the heat map appear."""
    if _chromium() is None:
        if os.environ.get("COVIDSPARK_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (make test installs it: make browser)")
        pytest.skip("chromium is not installed (make browser)")
    from playwright.sync_api import sync_playwright

    path, data = _fixture_image(fixture_dir, "covid", 1)
    expected = predictor.predict(data)
    url = f"http://{service.host}:{service.port}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True,
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            assert "not a diagnostic device" in page.inner_text("#disclaimer")
            page.set_input_files("#file", path)
            page.click("#submit")
            page.wait_for_selector("#result[data-label]", timeout=60_000)
            assert page.get_attribute("#result", "data-label") == expected["label"]
            assert expected["label"] in page.inner_text("#result")
            page.wait_for_function(
                "document.getElementById('heatmap').complete && "
                "document.getElementById('heatmap').naturalWidth > 0", timeout=120_000)
            assert "gradcam" in page.inner_text("#status")
            screenshot = tmp_path / "upload-page.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
