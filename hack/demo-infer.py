"""The demo's client, run in a Pod with the model's client Secret at /client: one Open Inference
Protocol request over mutual TLS on the dataset's public evaluation part (the model's
spec.data.evaluation), then the same request without a client certificate, which the server must
refuse."""
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

import numpy as np

from securemodel.data.loading import load_evaluation

url, model = sys.argv[1], sys.argv[2]
x, y = load_evaluation("builtin://breast_cancer?part=evaluation", training="builtin://breast_cancer")
x = x.astype(np.float32)
body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}]}).encode()


def infer(with_certificate: bool) -> dict:
    context = ssl.create_default_context(cafile="/client/ca.crt")
    if with_certificate:
        context.load_cert_chain("/client/tls.crt", "/client/tls.key")
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20, context=context) as response:
        return json.load(response)


deadline = time.monotonic() + 60
while True:  # a fresh Service is routed shortly after its endpoints are ready
    try:
        answer = infer(with_certificate=True)
        break
    except urllib.error.URLError as error:
        if time.monotonic() > deadline or isinstance(error.reason, ssl.SSLError):
            raise
        time.sleep(1)
predicted = np.asarray(next(o for o in answer["outputs"] if o["name"] == "predicted_class")["data"])
print(f"POST {url}/v2/models/{model}/infer  (client certificate CN=frontend)")
print(f"  answered by model version {answer.get('model_version')}")
print(f"  {len(predicted)} public evaluation samples, first predictions {predicted[:10].tolist()}")
print(f"  accuracy {np.mean(predicted == y):.4f}")
try:
    infer(with_certificate=False)
    print("  without a client certificate: ANSWERED (this must not happen)")
    sys.exit(1)
except (ssl.SSLError, ConnectionError, urllib.error.URLError, OSError) as error:
    print(f"  without a client certificate: refused ({type(error).__name__})")
