"""Export a trained model for serving: python scripts/export.py RUN_DIR_OR_CHECKPOINT --out DIR

Writes DIR/model.keras and DIR/saved_model (a TensorFlow SavedModel, signature "serve"). Both
take raw uint8 images [batch, height, width, channels] of any size, with the scaling inside,
and return {"probabilities": float32 [B, H, W, classes], "labels": int32 [B, H, W]}. The
checkpoint is reloaded in Keras' safe mode first.
"""

import argparse

import seg_hydra


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a run folder (checkpoints/best.keras) or a .keras file")
    p.add_argument("--out", type=seg_hydra.folder_to_write,
                   help="output folder (default RUN/export)")
    args = p.parse_args(argv)
    from pathlib import Path

    from seg import inference

    trained = inference.load(args.checkpoint)
    out = Path(args.out) if args.out else (trained.run_dir or trained.checkpoint.parent) / "export"
    info = inference.export(trained, out)
    print(f"exported {trained.checkpoint}:\n  {info['keras']}\n  {info['saved_model']}  "
          f"(signature 'serve')\n  input {info['input']}; outputs probabilities, labels; "
          f"classes {info['class_names']}")
    return info


if __name__ == "__main__":
    seg_hydra.refusing(main)
