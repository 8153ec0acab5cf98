module tfgateway.dev/benchmarks/router/proxybench

go 1.25.0
