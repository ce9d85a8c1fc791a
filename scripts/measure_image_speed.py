"""Images per second of input_pipeline/images.py on one file: read, decode, resize, PNG-encode.

    python scripts/measure_image_speed.py [PATH] [--max_size 512] [--repeat 50]

Without PATH it writes a synthetic 2500x3000 chest radiograph JPEG at quality 95 (about 1.6 MB, the
average size of a MIMIC-CXR-JPG file) to a temporary folder and measures that. The CPU-time rate is
what one core does; the wall-clock rates also count waiting for other processes.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipeline import images  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("path", nargs="?", help="image file (default: a synthetic 2500x3000 JPEG)")
  parser.add_argument("--max_size", type=int, default=images.DEFAULT_MAX_SIZE)
  parser.add_argument("--repeat", type=int, default=50)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    path = args.path
    if path is None:
      from tests.fakes import images as fakes  # pylint: disable=g-import-not-at-top
      path = fakes.write_jpeg(os.path.join(tmp, "chest_2500x3000.jpg"),
                              fakes.chest_like(3000, 2500, seed=0))
    result = images.measure_speed(path, max_size=args.max_size, repeat=args.repeat)
    size = os.path.getsize(path)
  h, w = result["input_size"]
  oh, ow = result["output_size"]
  print(f"{os.path.basename(path)}: {w}x{h} ({size / 1e6:.2f} MB) -> {ow}x{oh} PNG "
        f"({result['png_bytes'] / 1e3:.0f} KB), {args.repeat} runs")
  print(f"  {result['cpu_images_per_s']:.1f} images/s per core (CPU time), "
        f"{result['images_per_s']:.1f} images/s wall clock (best run "
        f"{result['best_images_per_s']:.1f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
