# Stand-in for jaegertracing/jaeger (v2): the jaeger binary built from the Go module proxy, on the
# official image's path, with its default all-in-one configuration (OTLP on 4317/4318, UI 16686).
FROM scratch
COPY jaeger /cmd/jaeger/jaeger-linux
ENV JAEGER_LISTEN_HOST=0.0.0.0
USER 10001
ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]
