"""DCASE 2023 Task 4's BEATs system (DCASE-REPO/DESED_task) on real DESED, value for value.

DESED_task's recipes/dcase2023_task4_baseline/confs/pretrained.yaml (run by train_pretrained.py)
is its default.yaml (configs/desed_baseline.py: the features, the CRNN, the mean teacher, the
learning rate and its ramp, 200 epochs, the post-processing) with these changes, each set here
(tests/test_desed_beats_config.py lists them beside the yaml's, and checks that the two yamls
differ in nothing else):
- net.use_embeddings True, embedding_size 768, embedding_type 'frame', aggregation_type
  'pool1d': BEATs' frame embeddings (496 tokens x 768 per 10-s clip) average-pooled to the
  CNN's 156 frames, joined to its output and projected back to 128 before the GRU
  (sedjax/models/desed_crnn.py: 1,227,236 parameters, as DESED_task's CRNN with them);
- pretrained: model 'beats', e2e False, freezed True: the embeddings of a frozen
  BEATs_iter3_plus_AS2M, computed once before training (its extract_embeddings.py: each clip
  zero-padded to 10 s, no padding mask);
- training.batch_size [24, 24, 48] (synthetic, weak, unlabeled; 12, 12, 24 in default.yaml):
  an epoch is 1420 weak clips // 24 = 59 steps.

The embeddings: sedjax's own BEATs computes them, once per split, cached in the workdir
(`model.embeddings.source = 'beats'`, sedjax/data/beats_embeddings.py), from the converted
BEATs_iter3_plus_AS2M checkpoint that `model.beats.checkpoint` names. It is empty here:
convert the checkpoint and set it (validation says so in one line otherwise):

    python -m sedjax.convert beats BEATs_iter3_plus_AS2M.pt beats_as2m.msgpack
    python -m sedjax.main --config=configs/desed_beats.py --workdir=W \\
        --config.model.beats.checkpoint=beats_as2m.msgpack

Or from pre-extracted files (DESED_task's extract_embeddings.py output, or sedjax.embed's):
--config.model.embeddings.source=files --config.model.embeddings.dir=DIR.

Where sedjax differs, as in configs/desed_baseline.py (its docstring), and: mixup mixes each
clip's embeddings with its features (DESED_task mixes the mel features only; a mixed clip keeps
its own embeddings).
"""

import ml_collections

from configs import desed_baseline

# DESED_task's weak clips in its training split (weak.tsv's 1,578 x weak_split 0.9); its epoch
# ends with them (sedjax.interop.desed_task_config)
WEAK_TRAIN_CLIPS = 1420


def add_beats_embeddings(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """pretrained.yaml's `net` and `pretrained`: BEATs frame embeddings joined by 'pool1d'."""
    e = c.model.embeddings
    e.source = "beats"  # pretrained.e2e False, freezed True: computed once, before training
    e.dir = ""  # or source 'files' and the folder of <split>.hdf5 / .npz files
    e.size = 768  # net.embedding_size
    e.frames = 496  # 62 patch rows x 8 mel-band groups of a 10-s clip
    b = c.model.beats
    b.checkpoint = ""  # the converted BEATs_iter3_plus_AS2M.pt: set it (module doc)
    b.size = "checkpoint"  # the checkpoint's own architecture (AS2M: 12 layers x 768)
    b.padding_mask_rule = "none"  # extract_embeddings.py: extract_features(x), no mask
    b.dtype = "float32"
    return c


def add_pretrained_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """pretrained.yaml's `training.batch_size` [24, 24, 48] (default.yaml's otherwise)."""
    mt = c.mean_teacher
    mt.batch_strong, mt.batch_weak, mt.batch_unlabeled = 24, 24, 48
    mt.steps_per_epoch = WEAK_TRAIN_CLIPS // mt.batch_weak  # 59
    return c


def get_config() -> ml_collections.ConfigDict:
    """DESED_task's 2023 BEATs system on real DESED at data.root."""
    return add_pretrained_training(add_beats_embeddings(desed_baseline.get_config()))
