"""The local stack: the top layer, which starts and stops rtdash's processes.

`rtdash up`/`down`/`status`/`demo`/`simulate` (stack.cli) run every part as a real
process (stack.services, stack.kafka) under one supervisor (stack.runner). This
package may import rtdash/, producers/, jobs/ and push_server/; none of them
imports it. The test suite and the benchmarks start their services through the
same definitions, on free ports (stack.testing).
"""
