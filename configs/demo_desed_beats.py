"""configs/demo_desed.py's system with frame embeddings that sedjax's own BEATs computes.

DESED_task's 2023+ CRNN joins BEATs frame embeddings to its CNN's output before the GRU. Here
sedjax computes them itself (`model.embeddings.source = 'beats'`): every split's clips go
through sedjax.models.beats once, and the tokens are cached in <workdir>/features
(sedjax/data/beats_embeddings.py). The encoder is a tiny one (BeatsConfig.tiny: 2 layers of
32, 4 heads) with RANDOM weights, so that the whole pipeline runs on a 2-core CPU in minutes:
its embeddings carry no learned information, and scores show the pipeline, not what BEATs
brings. For that, convert a BEATs checkpoint (python -m sedjax.convert beats CKPT OUT) and run
configs/desed_beats.py (DESED_task's BEATs system) with --config.model.beats.checkpoint=OUT
(docs/desed.md).

The data and the schedule are smaller than demo_desed.py's (fewer clips, 60 steps), for a run
of a few minutes; `:tiny` is tiny_desed.py's sizes (8 clips per split of 2 s, 4 steps), what
the tests run.
"""

from configs import demo_desed, tiny_desed

# BeatsConfig.tiny's token width; tokens per clip: 16 x 16 patches of the 10-ms fbank frames,
# (1 + (samples - 400) // 160) // 16 rows x 8 mel-band groups
TINY_WIDTH = 32
TOKENS = {5.0: 31 * 8, 2.0: 12 * 8}  # 5-s clips: 498 frames, 31 rows; 2-s: 198 frames, 12


def add_beats(c):
    """Embeddings from a tiny random BEATs, sized for c.data.clip_seconds."""
    m = c.model
    m.embeddings.source = "beats"
    m.embeddings.dir = ""
    m.embeddings.size = TINY_WIDTH
    m.embeddings.frames = TOKENS[c.data.clip_seconds]
    b = m.beats
    b.checkpoint = ""  # random weights: a demo only
    b.size = "tiny"
    b.seed = 0
    b.batch_size = 8
    return c


def get_config(variant: str = ""):
    """demo_desed.py + BEATs embeddings, on fewer clips; `:tiny` at tiny_desed.py's sizes."""
    if variant == "tiny":
        return add_beats(tiny_desed.get_config())
    if variant:
        raise ValueError(f"unknown config variant {variant!r}: use '' or 'tiny'")
    c = demo_desed.get_config()
    s = c.data.synthetic
    s.num_weak = s.num_unlabeled = s.num_strong = 60
    s.num_validation = s.num_test = 40
    mt = c.mean_teacher
    mt.num_epochs, mt.steps_per_epoch = 6, 10
    mt.eval_batch_size = c.runtime.predict_batch_size = 40
    return add_beats(c)
