"""kbench problem suites: one KernelBench-format file per problem, grouped by suite folder."""
