"""Training throughput of a config under several overrides: trains each for a few epochs and reports
images/s (train steps only: the first step, with compilation, and evaluation are excluded).

  python -m bench.train_throughput --config=configs/vit_cifar10.py --epochs=3 \
      --variant="bf16 pmap:" --variant="bf16 shard_map:parallel=shard_map" \
      --variant="fp32:model.dtype=float32" --json=bench/vit_cifar10.json

Each --variant is "LABEL:FIELD=VALUE,FIELD=VALUE" (overrides on top of --override).
"""
import json
import pathlib
import platform
import tempfile
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from apvit_jax.base_config import set_fields
from apvit_jax.training.loop import train_and_evaluate

config_flags.DEFINE_config_file("config", None, "Config file to benchmark.", lock_config=False)
flags.DEFINE_float("epochs", 3, "Epochs per variant.")
flags.DEFINE_multi_string("variant", ["default:"], "LABEL:FIELD=VALUE,... overrides per variant.")
flags.DEFINE_string("json", None, "Write the results here.")


def apply(config, overrides: str):
  for item in filter(None, overrides.split(",")):
    key, value = item.split("=", 1)
    old = config
    for name in key.split("."):
      old = old[name]
    set_fields(config, {key: type(old)(value) if not isinstance(old, bool) else value.lower() in ("1", "true")})
  return config


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  rows = []
  for spec in flags.FLAGS.variant:
    label, overrides = spec.split(":", 1)
    config = apply(flags.FLAGS.config.copy_and_resolve_references(), overrides)
    config.num_epochs = flags.FLAGS.epochs
    # The recipe's warm-up may be longer than a short benchmark; throughput does not depend on it.
    config.optim.warmup_epochs = min(config.optim.warmup_epochs, flags.FLAGS.epochs / 2)
    config.progress_bar = False
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.time()
      summary = train_and_evaluate(config, workdir)
    rows.append({"variant": label, "overrides": overrides, "batch_size": config.batch_size,
                 "model": config.model.variant, "dtype": config.model.dtype, "parallel": config.parallel,
                 "images_per_sec": summary["train_images_per_sec"], "final_accuracy": summary["final_accuracy"],
                 "epochs": config.num_epochs, "wall_seconds": time.time() - t0})
  device = jax.devices()[0]
  meta = {"device": getattr(device, "device_kind", device.platform), "num_devices": jax.device_count(),
          "jax": jax.__version__, "host": platform.node(), "date": time.strftime("%Y-%m-%d")}
  print(f"\n{meta['device']} x{meta['num_devices']}, jax {meta['jax']}")
  print(f"{'variant':<22}{'batch':>7}{'dtype':>10}{'parallel':>11}{'images/s':>11}{'acc':>8}{'wall s':>8}")
  for r in rows:
    print(f"{r['variant']:<22}{r['batch_size']:>7}{r['dtype']:>10}{r['parallel']:>11}"
          f"{r['images_per_sec']:>11.0f}{r['final_accuracy']:>8.3f}{r['wall_seconds']:>8.1f}")
  if flags.FLAGS.json:
    pathlib.Path(flags.FLAGS.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
