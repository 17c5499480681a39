# Arbiter's container image: the arbiter as PID 1, supervising its model workers and nginx.
#
#     docker build -t arbiter .
#     docker run --rm -p 8999:8999 --stop-timeout 75 arbiter
#     curl -F image=@photo.jpg http://127.0.0.1:8999/model_predict
#
# Stages:
#   build    compiles the `arbiter` binary from this source tree;
#   model    fetches ONNX Runtime's library from the pinned `onnxruntime` wheel and writes the test
#            model with scripts/make_model.py (seeded weights: replace it with your own export);
#   base     the slim runtime: nginx, libjpeg-turbo, the configs, the `arbiter` user;
#   prebuilt (tests only, `--target prebuilt`) takes the binary, library and model from a
#            `prebuilt/` directory of the build context instead of building them: see
#            scripts/container, which builds this same file that way to stay fast;
#   runtime  (the default) base + build + model.
# The config at /etc/arbiter/arbiter.toml (deploy/container/arbiter.toml) can be mounted over,
# or the whole /etc/arbiter directory (a Kubernetes ConfigMap): nothing else lives there.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjpeg62-turbo-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep crates.io downloads and compiled dependencies between builds (BuildKit, podman).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin arbiter \
    && install -D -m 0755 target/release/arbiter /out/arbiter

FROM debian:bookworm-slim AS model
# Keep these in step with scripts/setup (ORT_SHA256, MODEL_SHA256).
ARG ORT_VERSION=1.32.0
ARG ORT_SHA256=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
ARG MODEL_SHA256=4c2a10033a574dd8f344a87fe5a926b85bd5df5ed3ceabdaa8872b7036add1f9
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/requirements.txt scripts/make_model.py /src/
RUN python3 -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --only-binary=:all: -r /src/requirements.txt \
    && mkdir /out \
    && cp /venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} /out/ \
    && /venv/bin/python /src/make_model.py /out/resnet50-voc20.onnx \
    && printf '%s  %s\n' "${ORT_SHA256}" /out/libonnxruntime.so.${ORT_VERSION} \
        "${MODEL_SHA256}" /out/resnet50-voc20.onnx | sha256sum --check --strict

FROM debian:bookworm-slim AS base
# nginx-light: the proxy on port 8999; libjpeg62-turbo: the JPEG decoder the
# binary links (libjpeg's API);
# curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light libjpeg62-turbo curl \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/nginx/sites-enabled/default \
    && sed -i 's/^worker_processes .*/worker_processes 2;/' /etc/nginx/nginx.conf \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin arbiter \
    && install -d -o arbiter -g arbiter /var/cache/arbiter
COPY deploy/nginx/arbiter.conf /etc/nginx/sites-enabled/arbiter.conf
COPY deploy/container/arbiter.toml /etc/arbiter/arbiter.toml
COPY etc/class_name.json /var/lib/arbiter/class_name.json
ENV ARBITER_CONFIG=/etc/arbiter/arbiter.toml
EXPOSE 8999
STOPSIGNAL SIGTERM
# /readyz through nginx: both nginx and a ready worker must answer.
HEALTHCHECK --start-period=60s --interval=15s --timeout=3s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8999/readyz"]
ENTRYPOINT ["arbiter"]
CMD ["start", "-c", "/etc/arbiter/arbiter.toml"]

FROM base AS prebuilt
COPY prebuilt/arbiter /usr/local/bin/arbiter
COPY prebuilt/libonnxruntime.so.1.32.0 /usr/lib/arbiter/libonnxruntime.so.1.32.0
COPY prebuilt/resnet50-voc20.onnx /var/lib/arbiter/resnet50-voc20.onnx
RUN arbiter check -c /etc/arbiter/arbiter.toml >/dev/null

FROM base AS runtime
COPY --from=build /out/arbiter /usr/local/bin/arbiter
COPY --from=model /out/libonnxruntime.so.1.32.0 /usr/lib/arbiter/libonnxruntime.so.1.32.0
COPY --from=model /out/resnet50-voc20.onnx /var/lib/arbiter/resnet50-voc20.onnx
RUN arbiter check -c /etc/arbiter/arbiter.toml >/dev/null
