"""Writes the BEATs frame embeddings of every split of a config's dataset, in DESED_task's format.

    python -m sedjax.embed --config=configs/desed_baseline.py --workdir=DIR
        --config.model.beats.checkpoint=beats_as2m.msgpack [--out=DIR/embeddings] [--format=npz]

The embeddings are those a run computes with `model.embeddings.source = 'beats'` (the weights,
padding rule, clip length and batch size of `model.beats`; sedjax/data/beats_embeddings.py),
cached in DIR/features: a run in the same workdir reuses them, and so does a rerun of this
command. Each split goes to OUT/<split>.hdf5 (default OUT: DIR/embeddings) as DESED_task's
extract_embeddings.py writes them: `filenames` (the clips' wav names without extension),
`frame_embeddings` (N, D, tokens) float32 (768 x 496 for BEATs AS2M on 10-s clips) and
`global_embeddings` (N, D), each clip's mean over its valid tokens. `--format=npz` writes
OUT/<split>.npz with the same arrays (no h5py needed). `model.embeddings.dir=OUT` reads either.
Clips whose audio cannot be read are left out (and named in one line each on stderr).
"""

from __future__ import annotations

import os
import pathlib
import sys
import zipfile

from absl import flags
from ml_collections import config_flags

from sedjax.system import cli

FORMATS = ("hdf5", "npz")

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py): its data and "
                                "model.beats.", flag_values=FLAGS, lock_config=True)
flags.DEFINE_string("workdir", None, "The workdir whose features/ caches the embeddings (and "
                    "holds a generated dataset).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Folder of the embedding files (default: WORKDIR/embeddings).",
                    flag_values=FLAGS)
flags.DEFINE_enum("format", "hdf5", FORMATS, "hdf5 (DESED_task's, needs h5py) or npz.",
                  flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def write(path: pathlib.Path, filenames, tokens, valid, rows, chunk: int = 256) -> None:
    """Rows `rows` of a split's tokens (N, T, D) and valid counts (N,) as one file (hdf5 or npz,
    by path's suffix): filenames (stems), frame_embeddings (n, D, T), global_embeddings (n, D).
    Written atomically and `chunk` clips at a time (a split may not fit in memory)."""
    import numpy as np

    from sedjax.data import beats_embeddings
    from sedjax.data.embeddings import stem
    from sedjax.system import files

    names = np.array([stem(filenames[i]) for i in rows])
    n, (t, d) = len(rows), tokens.shape[1:]
    glob = beats_embeddings.global_embeddings(pipeline_rows(tokens, rows), valid[rows])

    def frames():  # (chunk, D, T) float32 blocks in order
        for start in range(0, n, chunk):
            block = np.asarray(tokens[rows[start:start + chunk]], np.float32)
            yield start, np.ascontiguousarray(block.transpose(0, 2, 1))

    with files.atomic_path(path) as tmp:
        if path.suffix == ".npz":  # np.savez's layout, the big array streamed into the zip
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for key, array in (("filenames", names), ("global_embeddings", glob)):
                    with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, array, allow_pickle=False)
                with z.open("frame_embeddings.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_2_0(f, {
                        "descr": np.dtype(np.float32).str, "fortran_order": False,
                        "shape": (n, d, t)})
                    for _, block in frames():
                        f.write(block.tobytes())
            return
        import h5py

        with h5py.File(tmp, "w") as f:
            f.create_dataset("filenames", data=names.astype(object), dtype=h5py.string_dtype())
            out = f.create_dataset("frame_embeddings", (n, d, t), dtype="float32")
            for start, block in frames():
                out[start:start + len(block)] = block
            f.create_dataset("global_embeddings", data=glob, dtype="float32")


def pipeline_rows(array, rows):
    """Rows of a memmap read lazily (sedjax.data.pipeline.RowSubset)."""
    from sedjax.data import pipeline

    return pipeline.take_rows(array, rows)


def main(argv) -> int:
    """Computes (or reuses) every split's embeddings and writes them; 0 when done."""
    cli.expect_no_arguments(argv)
    config_file = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
    if not os.path.isfile(config_file):
        raise cli.UserError(f"--config: no such file: {config_file}")
    if FLAGS.format == "hdf5":
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise cli.UserError("--format=hdf5 needs h5py: pip install h5py (or use "
                                "--format=npz)") from None
    import numpy as np

    from sedjax.data import prepare
    from sedjax.config import validate
    from sedjax.data import beats_embeddings
    from sedjax.system import workdir_lock

    config = FLAGS.config
    validate.validate(config, num_devices=1)
    validate.check_beats(config, for_model=False)
    workdir = pathlib.Path(FLAGS.workdir)
    out = pathlib.Path(FLAGS.out) if FLAGS.out else workdir / "embeddings"
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock.hold(workdir):
        splits = prepare.list_data(config, workdir)
        source = prepare.audio_source(config, workdir)
        for name, split in splits.items():
            tokens, valid, errors = beats_embeddings.extract_split(
                name, split.paths, split.filenames, config, workdir / "features", source)
            keep = np.array([i for i in range(len(split)) if i not in errors], np.int64)
            for i in sorted(errors):
                print(f"{name}: left out {split.filenames[i]}: {errors[i]}", file=sys.stderr)
            path = out / f"{name}.{FLAGS.format}"
            write(path, split.filenames, tokens, valid, keep)
            print(f"{name}: {len(keep)} clips -> {path} (frame_embeddings "
                  f"{(len(keep), tokens.shape[2], tokens.shape[1])})")
    return 0

if __name__ == "__main__":
    cli.run(main, FLAGS)
