module tfgateway/tests/vectors/gojson

go 1.15
