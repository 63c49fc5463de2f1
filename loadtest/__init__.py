"""Load tests: locust users (`locust -f loadtest/`) and the side-by-side benchmark
(`python -m postern.loadtest.bench`). Helper modules start with "_" so locust does not load them."""
