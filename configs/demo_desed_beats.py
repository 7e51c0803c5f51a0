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

`:finetune` (and `:tiny_finetune`, the tests') trains the encoder with the CRNN instead
(`model.beats.trainable`, as the 2024 DESED systems fine-tune BEATs): it starts from the same
random weights, its input (BEATs' fbank) is cached instead of its tokens, and it learns at its
own rate with layer-wise decay (docs/desed.md). With random weights this too shows the
pipeline only.
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


# the encoder's own learning rate and layer-wise decay when it trains (`:finetune`): the
# last of the tiny encoder's 2 layers at 1e-4 * 0.8, the first at 1e-4 * 0.8 ** 2, the patch
# embedding at 1e-4 * 0.8 ** 3; the CRNN at the mean teacher's (demo_desed.py's 5e-3)
FINETUNE_LEARNING_RATE = 1e-4
FINETUNE_LAYER_DECAY = 0.8
VARIANTS = ("", "tiny", "finetune", "tiny_finetune")


def add_finetune(c):
    """The BEATs encoder trained with the CRNN (model.beats.trainable)."""
    b = c.model.beats
    b.trainable = True
    b.learning_rate = FINETUNE_LEARNING_RATE
    b.layer_decay = FINETUNE_LAYER_DECAY
    return c


def get_config(variant: str = ""):
    """demo_desed.py + BEATs embeddings, on fewer clips; `:tiny` at tiny_desed.py's sizes;
    `:finetune` / `:tiny_finetune` the same with the encoder trained."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}: use one of "
                         f"{', '.join(map(repr, VARIANTS))}")
    c = _frozen("tiny" if variant.startswith("tiny") else "")
    return add_finetune(c) if variant.endswith("finetune") else c


def _frozen(variant: str):
    """The frozen-encoder system: demo sizes, or (`tiny`) tiny_desed.py's."""
    if variant == "tiny":
        return add_beats(tiny_desed.get_config())
    c = demo_desed.get_config()
    s = c.data.synthetic
    s.num_weak = s.num_unlabeled = s.num_strong = 60
    s.num_validation = s.num_test = 40
    mt = c.mean_teacher
    mt.num_epochs, mt.steps_per_epoch = 6, 10
    mt.eval_batch_size = c.runtime.predict_batch_size = 40
    return add_beats(c)
