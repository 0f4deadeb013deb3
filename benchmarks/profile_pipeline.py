"""Profile one pipeline run with pyinstrument and print the call tree.

pip install pyinstrument
python benchmarks/profile_pipeline.py [--records N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio

from _common import simulator_server
from bench_throughput import run_pipeline


def main() -> None:
    from pyinstrument import Profiler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    with simulator_server() as url:
        asyncio.run(run_pipeline(url, args.concurrency, 20, "profile-warm"))
        profiler = Profiler(async_mode="disabled")
        profiler.start()
        asyncio.run(run_pipeline(url, args.concurrency, args.records, "profile"))
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
