module tfgateway.dev/benchmarks/router/tlsbench

go 1.25.0
