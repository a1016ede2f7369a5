"""`medsci bench`: speed and memory figures as JSON (printed and written to a file)."""

from __future__ import annotations


def register(subparsers) -> None:
    from medsci.commands.args import add_command, device_name

    p = add_command(subparsers, "bench", run)
    p.add_argument("--items", nargs="+", help="subset to run (default: every item but the full-size ones)")
    p.add_argument("--full", action="store_true", help="every item, the full-size ones included (GPU node)")
    p.add_argument("--list", action="store_true", help="list the items and exit")
    p.add_argument("--device", type=device_name, default=None, help="auto | cpu | cuda")
    p.add_argument("--out", default="results/bench.json", help="JSON file to write")


def run(args) -> int:
    """measure speed and memory (JSON)

    The engine's Haar DWT+IDWT against a plain copy (224x224x160) and every registered generator's items
    (preprocessing, training step, sampling per volume or cube at its demo preset; with --full also the full-size
    presets meant for GPU nodes). Each item runs in a fresh process. --list shows the items.
    """
    import json

    from medsci import bench
    from medsci.commands.args import check_outputs
    from medsci.errors import MedsciError
    from medsci.io.atomic import write_json_atomic

    known = bench.items()
    if args.list:
        for name, where in known.items():
            print(f"{name}\t{where}{'' if name in bench.default_items() else '  (--full)'}")
        return 0
    check_outputs(args.out, folder=False)
    names = args.items or (list(known) if args.full else bench.default_items())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MedsciError(f"unknown bench item(s) {unknown}; known: {sorted(known)}")
    results = bench.run_bench(names, args.device)
    write_json_atomic(args.out, results)
    print(json.dumps(results, indent=2))
    return 0
