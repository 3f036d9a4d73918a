"""`helm test`: the operator's health endpoint answers and every CustomResourceDefinition is established.

Runs in the operator image (its Python and kubernetes client): python -c SCRIPT URL CRD-NAME...
Retries for up to two minutes, so that it may run right after an install or upgrade.
"""

import sys
import time
import urllib.request
from collections.abc import Callable

from kubernetes import client, config

DEADLINE = time.monotonic() + 120


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError as error:
        print(f"{url}: {error}", flush=True)
        return False


def established(api: client.ApiextensionsV1Api, name: str) -> bool:
    try:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
    except client.ApiException as error:
        print(f"{name}: {error.status} {error.reason}", flush=True)
        return False
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def wait(check: Callable[[], bool], what: str) -> None:
    while not check():
        if time.monotonic() > DEADLINE:
            sys.exit(f"FAIL: {what}")
        time.sleep(3)
    print(f"ok: {what}", flush=True)


def main(url: str, crds: list[str]) -> None:
    wait(lambda: healthy(url), f"the operator answers at {url}")
    config.load_incluster_config()
    api = client.ApiextensionsV1Api()
    for name in crds:
        wait(lambda name=name: established(api, name), f"CustomResourceDefinition {name} is established")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
