"""The demo's client, run in a Pod with the model's client Secret at /client: one Open Inference
Protocol request over mutual TLS on the dataset's public evaluation part (the model's
spec.data.evaluation), then the same request without a client certificate, which the server must
refuse.

Its functions are the end-to-end tests' client too: they mount this file as ``demo_infer.py`` and
import it (tests/e2e/e2e_support.py)."""
import json
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from securemodel.data.loading import load_evaluation

T = TypeVar("T")
CA = "/client/ca.crt"
CERTIFICATE = ("/client/tls.crt", "/client/tls.key")


def evaluation_request(training: str) -> tuple[bytes, np.ndarray]:
    """The OIP request body of all of breast_cancer's public evaluation part, as a model trained on the
    source ``training`` is asked it, and the part's labels."""
    x, y = load_evaluation("builtin://breast_cancer?part=evaluation", training=training)
    x = x.astype(np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip
    return body, y


def _context(certificate: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=CA)
    if certificate:
        context.load_cert_chain(*certificate)
    return context


def call(url: str, path: str, body: Any = None, certificate: tuple[str, str] | None = CERTIFICATE) -> tuple[int, Any]:
    """GET ``url + path``, or POST ``body`` as JSON there: the HTTP status and the JSON answer, an error's too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=20, context=_context(certificate)) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def infer(url: str, model: str, body: bytes, certificate: tuple[str, str] | None = CERTIFICATE) -> dict[str, Any]:
    """POST the OIP request ``body`` to ``model``'s infer endpoint; its answer (an HTTP error is raised)."""
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=20, context=_context(certificate)) as response:
        return json.load(response)


def first_answer(ask: Callable[[], T], seconds: float) -> T:
    """``ask()``, retried each second for up to ``seconds`` while the connection fails: a fresh Service is
    routed shortly after its endpoints are ready. A TLS refusal is raised at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except (ConnectionRefusedError, socket.timeout, urllib.error.URLError) as error:
            if time.monotonic() > deadline or isinstance(getattr(error, "reason", None), ssl.SSLError):
                raise
            time.sleep(1)


def refusal(ask: Callable[[], object]) -> Exception | None:
    """What refused ``ask()`` (the TLS handshake, the connection, or an HTTP error), or None when it was answered."""
    try:
        ask()
    except (ssl.SSLError, ConnectionError, urllib.error.URLError, OSError) as error:
        return error
    return None


def predicted_classes(answer: dict[str, Any]) -> np.ndarray:
    """The ``predicted_class`` output of an OIP answer."""
    return np.asarray(next(o for o in answer["outputs"] if o["name"] == "predicted_class")["data"])


def main(url: str, model: str) -> int:
    body, y = evaluation_request("builtin://breast_cancer")
    answer = first_answer(lambda: infer(url, model, body), 60)
    predicted = predicted_classes(answer)
    print(f"POST {url}/v2/models/{model}/infer  (client certificate CN=frontend)")
    print(f"  answered by model version {answer.get('model_version')}")
    print(f"  {len(predicted)} public evaluation samples, first predictions {predicted[:10].tolist()}")
    print(f"  accuracy {np.mean(predicted == y):.4f}")
    refused = refusal(lambda: infer(url, model, body, certificate=None))
    if refused is None:
        print("  without a client certificate: ANSWERED (this must not happen)")
        return 1
    print(f"  without a client certificate: refused ({type(refused).__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
