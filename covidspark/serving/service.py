"""The prediction service: a REST API and an upload page for one saved model.

``covidspark serve --model DIR --port 8000`` runs it (Starlette on uvicorn;
``pip install 'covidspark[serve]'``):

- ``GET /``: the upload page (image, prediction with its probability, heat map);
- ``GET /health``: ``{"status": "ok", ...}`` with the model's facts and counters;
- ``POST /predict``: multipart upload (field ``file``) -> JSON ``label``,
  ``probabilities``, ``threshold``, ``model_id``, ``timing_ms``;
- ``POST /explain``: the same upload -> overlay PNG (query ``label=`` to
  explain another class, ``method=gradcam|occlusion|auto``); the prediction
  comes back in the ``X-Covidspark-Prediction`` header as JSON.

Bad input never takes the service down: a body over the size limit is refused
(413) from its ``Content-Length`` before it is read, or as soon as the bytes
read pass the limit; a non-multipart body gets 415, a missing ``file`` field
400, a file that is not a decodable image, truncated or a decompression bomb
422; each with a JSON ``error`` reason. Uploads are held in memory or spooled
into a temporary directory the service creates and removes; client file names
are never used as paths.

Inference runs in a worker thread (the event loop keeps answering ``/health``)
and one image at a time: the backbone already uses every core.
"""
import contextlib
import json
import logging
import os
import resource
import shutil
import tempfile
import threading
import time

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
UPLOAD_FIELD = "file"
DISCLAIMER = ("Research tool, not a diagnostic device: it has not been validated for "
              "clinical use and must not be used to diagnose or treat anyone.")


class RequestError(Exception):
    """An upload the service refuses: an HTTP status and a reason for the client."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def peak_rss_mb():
    """Peak resident memory of this process, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    """Resident memory of this process now, in MB (from /proc; peak where absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


async def read_limited_body(request, limit):
    """The request body, refused with 413 before it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise RequestError(400, f"invalid Content-Length {declared!r}") from None
        if declared > limit:
            raise RequestError(413, f"upload of {declared} bytes exceeds the limit of "
                                    f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"upload exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request, limit):
    """The bytes of the multipart field ``file`` (and its client-side name, for messages)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise RequestError(415, f"expected a multipart/form-data upload with a '{UPLOAD_FIELD}' "
                                f"field; got {got}")
    body = await read_limited_body(request, limit)

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=8,
                                     max_part_size=64 * 1024).parse()
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart upload: {exc}") from None
    try:
        upload = form.get(UPLOAD_FIELD)
        if upload is None or isinstance(upload, str):
            # Naming the fields that came shows a client sending "image=@x.png" its mistake.
            sent = ", ".join(repr(key)[:60] for key in list(form.keys())[:8]) or "no fields"
            raise RequestError(400, f"no file in the '{UPLOAD_FIELD}' field of the upload "
                                    f"(it has {sent}); send the image as {UPLOAD_FIELD}=@x.png")
        data = await upload.read()
        # The client's file name is only ever echoed in messages, never used as a path.
        name = os.path.basename(str(upload.filename or "upload"))[:200] or "upload"
        return data, name
    finally:
        await form.close()


def create_app(model_dir, max_upload_mb=DEFAULT_MAX_UPLOAD_MB, max_pixels=None, engine=None,
               predictor=None):
    """The Starlette application serving ``model_dir``.

    Parameters
    ----------
    model_dir : str
        A saved covidspark pipeline (``<run>/model``).
    max_upload_mb : float
        Largest accepted upload (default 20 MB).
    max_pixels : int, optional
        Largest accepted image in pixels (default
        :data:`covidspark.data.decoding.DEFAULT_MAX_PIXELS`).
    engine : str, optional
        Overrides the featurizer's engine.
    predictor : covidspark.serving.predictor.Predictor, optional
        An already loaded predictor (tests, notebooks).

    Returns
    -------
    starlette.applications.Starlette
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from covidspark.data import decoding
    from covidspark.serving import explain
    from covidspark.serving.predictor import Predictor

    workdir = tempfile.mkdtemp(prefix="covidspark-serve-")
    # Everything this process writes to tempfile's directory lands in its own folder,
    # removed at shutdown: multipart spools, TensorFlow's autograph sources.
    tempfile.tempdir = workdir
    if predictor is None:
        predictor = Predictor(model_dir, max_pixels=max_pixels or decoding.DEFAULT_MAX_PIXELS,
                              engine=engine)
    facts = predictor.describe()
    predictor.warm_up()  # the first request should not pay for building and tracing the model
    limit = int(max_upload_mb * 2 ** 20)
    counters = {"requests": 0, "ok": 0, "refused": 0, "errors": 0}
    counters_lock = threading.Lock()
    started = time.time()
    rss_at_start = current_rss_mb()

    def count(key):
        with counters_lock:
            counters["requests"] += 1
            counters[key] += 1

    def refused(exc):
        count("refused")
        return JSONResponse({"error": exc.reason, "status": exc.status}, status_code=exc.status)

    async def handle(request, work):
        try:
            data, name = await read_upload(request, limit)
            response = await run_in_threadpool(work, data, name)
        except RequestError as exc:
            return refused(exc)
        except decoding.ImageDecodeError as exc:
            return refused(RequestError(422, str(exc)))
        except explain.ExplainError as exc:
            return refused(RequestError(400, str(exc)))
        except Exception:  # the service keeps serving; the log has the traceback
            logger.exception("request failed")
            count("errors")
            return JSONResponse({"error": "internal error", "status": 500}, status_code=500)
        count("ok")
        return response

    async def predict(request):
        def work(data, name):
            result = predictor.predict(data, name)
            return JSONResponse({**result, "filename": name})

        return await handle(request, work)

    async def explain_endpoint(request):
        label = request.query_params.get("label") or None
        method = request.query_params.get("method", "auto")

        def work(data, name):
            result, heat, image = explain.explain(predictor, data, label, method, name)
            png = explain.overlay_png(image, heat)
            return Response(png, media_type="image/png",
                            headers={"X-Covidspark-Prediction": json.dumps(result)})

        return await handle(request, work)

    async def health(request):
        with counters_lock:
            snapshot = dict(counters)
        return JSONResponse({"status": "ok", **facts, "uptime_s": round(time.time() - started, 1),
                             "max_upload_bytes": limit, "rss_mb": round(current_rss_mb(), 1),
                             "rss_at_start_mb": round(rss_at_start, 1), **snapshot})

    async def index(request):
        return HTMLResponse(render_page(facts, limit))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    app = Starlette(routes=[
        Route("/", index), Route("/health", health),
        Route("/predict", predict, methods=["POST"]),
        Route("/explain", explain_endpoint, methods=["POST"]),
    ], lifespan=lifespan)
    app.state.predictor = predictor
    app.state.workdir = workdir
    return app


def render_page(facts, limit):
    """The upload page, with the model's facts and the disclaimer filled in."""
    from importlib import resources
    from html import escape

    template = resources.files("covidspark.serving").joinpath("static/index.html").read_text(
        "utf-8")
    weights = facts["weights"]
    if not facts["pretrained"] and "NOT pretrained" not in weights:
        weights += " (NOT pretrained)"
    model = f"{facts['backbone']} + {facts['classifier'].upper()}, classes {', '.join(facts['labels'])}"
    return (template.replace("{{DISCLAIMER}}", escape(DISCLAIMER))
            .replace("{{MODEL}}", escape(model)).replace("{{WEIGHTS}}", escape(weights))
            .replace("{{MAX_MB}}", f"{limit / 2 ** 20:g}"))


def serve(model_dir, host="127.0.0.1", port=8000, max_upload_mb=DEFAULT_MAX_UPLOAD_MB,
          max_pixels=None, engine=None, log_level="info"):
    """Load the model and serve it until interrupted (uvicorn)."""
    import uvicorn

    app = create_app(model_dir, max_upload_mb, max_pixels, engine)
    logger.info("Serving %s on http://%s:%d", model_dir, host, port)
    # A bounded backlog of requests: beyond it clients get 503 instead of queueing forever.
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=64,
                timeout_keep_alive=5)
