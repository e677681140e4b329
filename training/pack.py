"""Build the training data pack: `python -m training.pack --config C --out pack.npz`.

Every train8 image goes through its source's estimated window (or, with
`[preprocessing] hu_calibration = "per_image"`, its own landmark fit, training/hu_calibration.py;
images whose fit fails are left out and counted in pack.json `excluded`) into the config's
representation, every ct16 slice through the same window from HU; all at the input size,
JPEG-encoded (q from the config) so the pack fits a GPU machine's transfer limit. Writes
pack.json beside it with the estimated windows, counts and the split.
"""
import argparse
import json
from pathlib import Path

from . import config as config_mod
from . import data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cfg = config_mod.load(a.config)
    meta = data.build_pack(Path(a.data), cfg["preprocessing"], cfg["input_size"], cfg["data"]["seed"],
                           cfg["data"]["holdout"], Path(a.out), cfg["data"]["jpeg_quality"])
    Path(a.out).with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
