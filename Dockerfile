# strata-server on Debian 12. Build:  docker build -t strata .
# Run with a checkpoint mounted:     docker run -p 8080:8080 -v /path/to/model:/model strata --model /model
# Without a volume it serves the built-in models/strata-demo.
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential pkg-config libjansson-dev libopenblas-dev libpcre2-dev libutf8proc-dev \
        libmicrohttpd-dev libuv1-dev libcriterion-dev zlib1g-dev python3-numpy \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j2 all

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libjansson4 libopenblas0-pthread libpcre2-8-0 libutf8proc2 libmicrohttpd12 libuv1 zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/strata --create-home strata
COPY --from=build /src/build/strata-server /src/build/strata /usr/local/bin/
COPY --from=build /src/models/strata-demo /opt/strata/models/strata-demo
COPY config/strata.conf /etc/strata/strata.conf
USER strata
VOLUME ["/model", "/var/lib/strata"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["strata-server", "--config", "/etc/strata/strata.conf", "--host", "0.0.0.0", "--port", "8080", \
            "--state-dir", "/var/lib/strata"]
CMD ["--model", "/opt/strata/models/strata-demo"]
