"""Build the thorax atlas of simulator version 3 from the Sunnybrook short-axis cine.

    python preprocessing/build_thorax_atlas.py [SUNNYBROOK_DIR] [--out FILE]

SUNNYBROOK_DIR defaults to ``$CARDIACNETS_SHARED_DATA/sunnybrook`` (``../shared/data/sunnybrook``);
the output to the package's ``cardiacnets/simulate/assets/sunnybrook_thorax.npz``. The source data are
the Sunnybrook Cardiac Data (CC0 1.0; Radau et al., MIDAS Journal 2009), patient SCD0000101. The source
folder is only read.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from cardiacnets.config import shared_data_dir
from cardiacnets.simulate.thorax_atlas import ATLAS_FILE, build_thorax_atlas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sunnybrook_dir", nargs="?", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ATLAS_FILE)
    args = parser.parse_args()
    source = args.sunnybrook_dir or Path(shared_data_dir()) / "sunnybrook"
    atlas = build_thorax_atlas(source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atlas.save(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {atlas.frames.shape[0]} slices x {atlas.frames.shape[1]} phases, "
          f"{args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
