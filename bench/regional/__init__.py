"""The benchmark suite of the exchange: generated Wuzhou data, workloads W1–W8, the database alone beside them."""
