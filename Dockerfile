# The project's two images, built by `make images` with buildah on a locally built base image
# (hack/base-image.sh: Debian bookworm + Python 3.11 from Debian's packages; nothing is pulled):
#   --target operator : securemodel-operator, the kopf operator (no torch)
#   --target worker   : securemodel-worker, the pod entrypoints (train, compress, serve, fl-*)
# Dependencies are installed in their own layer from pyproject.toml alone, so a code change
# rebuilds only the last, small layer. The package's metadata names README.md; an empty file stands
# in for it, so that editing the README rebuilds no image (loading a changed worker image, 7 GB
# with torch, into the cluster takes about 100 s).
ARG BASE_IMAGE=securemodel.local/python-base:bookworm
# make images installs from the local wheelhouse mounted at /wheels ("--no-index --find-links
# /wheels"); a plain build leaves this empty and installs from the package index.
ARG PIP_INSTALL_FLAGS=""

FROM ${BASE_IMAGE} AS python
ARG PIP_INSTALL_FLAGS
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Pods run as uid 65532 (Pod Security "restricted"); libraries that look up the user's name need
# a passwd entry for it.
RUN echo "securemodel:x:65532:65532::/home/securemodel:/usr/sbin/nologin" >>/etc/passwd \
    && echo "securemodel:x:65532:" >>/etc/group && mkdir -p /home/securemodel && chown 65532:65532 /home/securemodel \
    && python3 -m venv /opt/venv && /opt/venv/bin/pip install -q $PIP_INSTALL_FLAGS --upgrade pip setuptools wheel
COPY hack/requirements-from-pyproject.py /tmp/
COPY pyproject.toml /tmp/

FROM python AS operator-deps
ARG PIP_INSTALL_FLAGS
RUN python3 /tmp/requirements-from-pyproject.py /tmp/pyproject.toml >/tmp/requirements.txt \
    && pip install -q $PIP_INSTALL_FLAGS -r /tmp/requirements.txt

FROM python AS worker-deps
ARG PIP_INSTALL_FLAGS
RUN python3 /tmp/requirements-from-pyproject.py /tmp/pyproject.toml worker >/tmp/requirements.txt \
    && pip install -q $PIP_INSTALL_FLAGS -r /tmp/requirements.txt

FROM operator-deps AS operator
COPY pyproject.toml /src/
COPY securemodel /src/securemodel
RUN touch /src/README.md && pip install -q --no-deps --no-build-isolation /src && rm -rf /src
USER 65532:65532
ENTRYPOINT ["securemodel-operator"]

FROM worker-deps AS worker
COPY pyproject.toml /src/
COPY securemodel /src/securemodel
RUN touch /src/README.md && pip install -q --no-deps --no-build-isolation /src && rm -rf /src
USER 65532:65532
ENTRYPOINT ["securemodel-worker"]
