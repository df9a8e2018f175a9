"""Reads a run's TensorBoard event files with TensorBoard's own event reader (a test oracle).

Run: .venv/bin/python scripts/read_events.py RUN_DIR/tensorboard
Prints JSON: {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height], ...]}}
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator


def main():
    acc = event_accumulator.EventAccumulator(
        sys.argv[1], size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                    event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "images": {}}
    for t in tags.get("scalars", []):
        out["scalars"][t] = [[e.step, e.value] for e in acc.Scalars(t)]
    # TF2 summary ops write scalars as tensors with the scalar plugin's metadata.
    for t in tags.get("tensors", []):
        evs = acc.Tensors(t)
        if evs and len(evs[0].tensor_proto.tensor_shape.dim) == 0:
            from tensorboard.util import tensor_util
            out["scalars"][t] = [[e.step, float(tensor_util.make_ndarray(e.tensor_proto))] for e in evs]
        elif evs:
            from tensorboard.util import tensor_util
            out["images"][t] = [[e.step] + [int(x) for x in tensor_util.make_ndarray(e.tensor_proto)[:2]]
                                for e in evs]
    for t in tags.get("images", []):
        out["images"][t] = [[e.step, e.width, e.height] for e in acc.Images(t)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
