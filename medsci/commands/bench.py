"""`medsci bench`: speed and memory figures as JSON (printed and written to a file)."""

from __future__ import annotations

DEFAULT_ITEMS = ["haar", "preprocessing", "synthesis-demo", "seismic"]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure speed and memory (JSON)",
                              description="Haar DWT+IDWT vs a plain copy (224x224x160), preprocessing of a "
                                          "BraTS-sized case vs the nibabel load+save floor, synthesis train "
                                          "step / sampling per volume at the demo (and with --full, BraTS) "
                                          "preset, seismic reconstruction per cube. Each item runs in a fresh "
                                          "process.")
    p.add_argument("--items", nargs="+", help="subset to run (default: all but the BraTS-size synthesis item)")
    p.add_argument("--full", action="store_true", help="also the full BraTS-size synthesis item (GPU node)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--out", default="results/bench.json", help="JSON file to write")
    p.set_defaults(handler=run)


def run(args) -> int:
    import json

    from medsci import bench
    from medsci.errors import MedsciError
    from medsci.io.atomic import write_json_atomic

    bench._load_generator_items()
    names = args.items or [n for n in DEFAULT_ITEMS if n in bench.ITEMS]
    if args.full and "synthesis-brats" not in names:
        names.append("synthesis-brats")
    unknown = [n for n in names if n not in bench.ITEMS]
    if unknown:
        raise MedsciError(f"unknown bench item(s) {unknown}; known: {sorted(bench.ITEMS)}")
    results = bench.run_bench(names, args.device)
    write_json_atomic(args.out, results)
    print(json.dumps(results, indent=2))
    return 0
