"""Which run won, in TensorBoard: python scripts/board.py DIR

Ranks the runs under DIR (a sweep folder, outputs/, ...) by val mIoU, prints the ranking, and
starts TensorBoard on 127.0.0.1 over a board of them (seg.board): its HPARAMS table lists the
runs best first, named by rank and the settings that tell them apart, with every config key a
column and the keys that differ ticked. Open the printed URL; Ctrl-C stops TensorBoard.
The runs are not touched: the board is a folder of links (a temporary one unless --logdir),
made anew at each start, so a run that starts later needs a new start of board.py.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import seg_hydra

WAIT_S = 120  # TensorBoard's start, reading every event file once
CURVES = "?runFilter=validation&tagFilter=IoU%2Fmean"  # Time Series: validation mIoU, per run


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="a folder of runs (a sweep folder, outputs/, ...)")
    p.add_argument("--port", type=seg_hydra.whole(0), default=6006,
                   help="TensorBoard's port on 127.0.0.1 (another free one when it is taken; "
                        "0: any free one)")
    p.add_argument("--logdir", type=seg_hydra.folder_to_write,
                   help="build the board here and keep it (default: a temporary folder, "
                        "removed when TensorBoard stops); it must be empty or a board")
    p.add_argument("--no-serve", action="store_true",
                   help="build the board and print the ranking, without starting TensorBoard")
    return p.parse_args(argv)


def free_port(wanted: int) -> int:
    """wanted when it is free on 127.0.0.1, else one the system gives."""
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def ranking(entries) -> str:
    """The board's rows as the console shows them."""
    lines = [f"{'val mIoU':>8}  {'run':<40}  folder"]
    for entry in entries:
        miou = entry.run.miou
        score = f"{miou:8.4f}" if miou == miou else f"{entry.run.status:>8}"
        lines.append(f"{score}  {entry.name:<40}  {entry.run.path}")
    return "\n".join(lines)


def _board_folder(logdir: str | None) -> Path:
    """Where the board goes: a fresh temporary folder, or --logdir emptied of an earlier board
    (a folder holding anything else is refused: nothing of the user's is deleted)."""
    if logdir is None:
        return Path(tempfile.mkdtemp(prefix="seg-board-"))
    out = Path(logdir)
    marker = out / ".seg-board"
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        seg_hydra.fail(FileExistsError(
            f"--logdir {out}: holds files that are not a board, and a board's folder is emptied "
            "at each start: give an empty or new folder"))
    if marker.is_file():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by scripts/board.py; emptied at its next start\n")
    return out


def serve(board: Path, port: int) -> subprocess.Popen:
    """TensorBoard over the board on 127.0.0.1:port, once it answers; exit 1 when it does not."""
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(board),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            print(f"seg: TensorBoard exited with {server.returncode}:\n"
                  f"{server.stderr.read()[-2000:]}", file=sys.stderr)
            sys.exit(1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    print(f"seg: TensorBoard did not answer on port {port} within {WAIT_S} s", file=sys.stderr)
    sys.exit(1)


def main(argv=None):
    args = parse(argv)
    from seg import board, compare

    try:
        runs = compare.find_runs(args.dir)
    except FileNotFoundError as e:
        seg_hydra.fail(e)
    if not runs:
        seg_hydra.fail(FileNotFoundError(f"{args.dir}: no run folders (with config.json) "
                                         "under it"))
    for run in runs:
        for problem in run.problems:
            print(f"skipped: {problem}")
    folder = _board_folder(args.logdir)
    entries = board.build(runs, folder)
    print(ranking(entries), flush=True)
    left_out = [r for r in runs if not (r.path / "tb").is_dir()]
    if left_out:
        print(f"not on the board (no tb/ folder): {', '.join(r.name for r in left_out)}")
    if args.no_serve:  # the ranking only: a temporary board is not left behind
        if args.logdir is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"board: {folder}")
        return
    port = free_port(args.port)
    print(f"starting TensorBoard on 127.0.0.1:{port} ...", flush=True)
    server = serve(folder, port)
    base = f"http://127.0.0.1:{port}"
    print(f"\nWhich run won: open {base}/#hparams (the runs ranked by val mIoU)\n"
          f"Their validation mIoU by epoch: {base}/{CURVES}#timeseries\n"
          "Ctrl-C stops TensorBoard.", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
    finally:
        if args.logdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
