"""The DCASE2018 Task 4 baseline, value for value (its README and code), on the real dataset."""

import ml_collections
from ml_collections import config_dict

CLASSES = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)


def get_config() -> ml_collections.ConfigDict:
    """Returns the seed system's configuration."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.recipe = "two_pass"  # how the system is trained: sedjax/recipes/<recipe>.py
    # runs trained as one program (a leading run axis, vmapped): run k uses seed + k and
    # reproduces the single run of that seed; results per run plus mean and std
    c.num_runs = 1

    # ---- data -------------------------------------------------------------------------------
    c.data = d = ml_collections.ConfigDict()
    # 'dcase2018' or 'desed' (real, read from `root` in that layout; sedjax/data/dataset.py) or
    # 'synthetic' (generated, in the layout data.synthetic.layout)
    d.dataset = "dcase2018"
    d.root = "~/data/dcase2018_task4"  # holds metadata/ and audio/
    d.classes = CLASSES
    d.clip_seconds = 10.0
    d.use_eval = True  # score metadata/eval/eval.csv too when it is present
    # read DESED's strongly labelled validation split (metadata/validation/validation.tsv) when
    # present: every choice of a run (early stopping, kept checkpoint, tuned post-processing)
    # is then made on it; the DCASE2018 layout has none (the seed holds out 20 % of weak clips)
    d.use_validation = True
    # DESED layout: which split makes the choices and which is the test (sedjax/data/
    # split_roles.py). 'sedjax': choices on validation, test = the public evaluation set
    # (metadata/eval/public.tsv); 'desed_task' (DESED_task's recipe): choices on
    # synthetic21_validation with weak_held_out of the weak clips kept out of training, test =
    # validation; 'auto': 'desed_task' when the folder has no public evaluation set
    d.split_roles = "auto"
    # under DESED_task's roles: the share of weak clips held out of training (DESED_task's
    # weak_split = 0.9 trains on the other 90 %, drawn as its weak_df.sample(frac, seed))
    d.weak_held_out = 0.1
    # read metadata/train/synthetic.csv (strongly labelled clips, DCASE2019 layout) when present;
    # the 2018 task had none
    d.use_strong = False
    # convert clips at another rate (or stereo) once into <workdir>/audio_<rate>/ (as DESED_task
    # writes *_16k folders); off: converted while the features are computed (cached with them)
    d.resample_cache = False
    # Synthetic soundscapes (used when dataset == 'synthetic'; written to <workdir>/synthetic
    # unless root is set). Sizes of the real DCASE2018 set.
    d.synthetic = s = ml_collections.ConfigDict()
    s.num_weak = 1578
    s.num_unlabeled = 14412
    s.num_test = 288
    s.num_strong = 0  # strongly labelled clips (metadata/train/synthetic.csv)
    s.num_validation = 0  # strongly labelled validation clips (metadata/validation/, DESED)
    # DESED's synthetic validation set (metadata/validation/synthetic21_validation/; layout
    # 'desed' only), which DESED_task's roles make their choices on
    s.num_synth_validation = 0
    s.seed = 1234
    s.sample_rate = 44100
    s.layout = "dcase2018"  # or 'desed' (DESED's folders and tsv files)
    s.num_workers = 0  # generator processes; 0 = all cores

    # ---- features (the baseline's) ----------------------------------------------------------
    c.features = f = ml_collections.ConfigDict()
    f.sample_rate = 44100
    f.n_fft = 2048
    f.win_length = 1764  # 40 ms
    f.hop_length = 882  # 20 ms
    f.window = "hamming"  # scipy.signal.get_window(window, win_length): periodic (asymmetric)
    f.center = True
    # librosa < 0.10 (which the seed ran on) padded centered frames by reflection; newer librosa
    # defaults to zeros, so the seed's choice is pinned here.
    f.pad_mode = "reflect"
    f.spectrogram = "magnitude"  # magnitude, not power
    f.n_mels = 64
    f.fmin = 0.0
    f.fmax = 22050.0
    f.htk = False  # Slaney mel scale
    f.mel_norm = "slaney"  # librosa's area normalization; dcase_util's peak normalization off
    f.window_periodic = True  # scipy get_window(fftbins=True); DESED: a symmetric window
    f.log = "natural"  # log(mel + log_eps); 'db': 20 log10(max(mel, db_amin)) clipped to db_range
    f.log_eps = 2.220446049250313e-16  # numpy.spacing(1): float64 machine epsilon
    f.db_amin = 1e-5  # used when log == 'db' (DESED_task)
    f.db_range = (-50.0, 80.0)  # used when log == 'db' (DESED_task)
    # 'dataset': per-band mean/std over the training clips (the seed); 'instance_minmax': each
    # clip scaled to [-1, 1] over its own frames and bands (DESED_task's TorchScaler)
    f.scaler = "dataset"
    f.num_frames = 500  # a 10 s clip gives 501 frames; the first 500 are kept
    f.frontend = "jax"  # 'jax' (batched on the accelerator) or 'librosa' (the reference)
    f.batch_size = 64  # clips per jnp frontend call
    f.num_workers = 0  # audio decoding / librosa processes; 0 = all cores

    # ---- model (the baseline's) -------------------------------------------------------------
    c.model = m = ml_collections.ConfigDict()
    m.arch = "crnn"  # 'crnn' (the seed's) or 'desed_crnn' (DESED_task's 2023 baseline CRNN)
    m.conv_features = (64, 64, 64)
    m.conv_kernel = (3, 3)
    # (time, frequency); time pooling > 1 lowers the frame outputs' rate (DCASE2019: x8)
    m.pool_sizes = ((1, 4), (1, 4), (1, 4))
    m.conv_dropout = 0.3
    m.batchnorm_momentum = 0.99  # Keras defaults
    m.batchnorm_epsilon = 1e-3
    m.gru_units = 64  # per direction
    m.gru_input_dropout = 0.3
    m.gru_unroll = 1  # nn.scan unroll factor; a speed knob, not a modelling choice
    m.gru_layers = 1  # stacked bidirectional GRU layers (desed_crnn only; the seed has one)
    m.head_dropout = 0.0  # dropout before the dense heads (desed_crnn only)
    # Pre-extracted frame embeddings (desed_crnn only; DESED_task's BEATs system): files
    # <dir>/<split>.hdf5 or .npz (sedjax/data/embeddings.py), (size, frames) per clip, average-
    # pooled to the CNN's frame rate and joined to its output before the GRU; "" = none
    m.embeddings = ml_collections.ConfigDict()
    m.embeddings.dir = ""
    m.embeddings.size = 768  # BEATs
    m.embeddings.frames = 496  # BEATs: 62 time x 8 frequency patches of a 10-s clip
    # where the embeddings come from: 'files' (the files in `dir`) or 'beats' (computed by
    # sedjax's BEATs below, once, into <workdir>/features; sedjax/data/beats_embeddings.py)
    m.embeddings.source = "files"
    # sedjax's BEATs encoder, for embeddings.source 'beats' and `python -m sedjax.embed`
    m.beats = ml_collections.ConfigDict()
    # a converted checkpoint (python -m sedjax.convert beats CKPT OUT: OUT and OUT's .json);
    # "" = random weights of `size`, which carry no learned information: demos and tests only
    m.beats.checkpoint = ""
    # the architecture: 'checkpoint' (the checkpoint's own), or for random weights 'tiny'
    # (2 layers of 32: demos and tests) or 'base' (BEATs AS2M's 12 layers of 768)
    m.beats.size = "checkpoint"
    m.beats.seed = 0  # of the random weights (unused with a checkpoint)
    # the zeros after a clip shorter than data.clip_seconds: 'none' (encoded as audio, as
    # DESED_task's extract_embeddings.py does), 'beats' (masked by BEATs' own padding mask)
    # or 'strict' (masked so that the valid tokens equal the clip alone's)
    m.beats.padding_mask_rule = "none"
    m.beats.dtype = "float32"  # of the patches and the transformer: 'float32' or 'bfloat16'
    m.beats.batch_size = 16  # clips per encoder call
    # fine-tuning: the encoder becomes part of the trained model (embeddings.source 'beats'):
    # its weights start as above and train with the CRNN, the fbank of each clip cached
    # instead of its tokens; False: frozen, its tokens computed once
    m.beats.trainable = False
    # the encoder's learning rate (Adam, with the recipe's ramp-up), the CRNN keeping the
    # recipe's: layer i of L (0 the first) trains at learning_rate * layer_decay ** (L - i),
    # the parts before the layers (patch embedding, position conv) at ** (L + 1)
    m.beats.learning_rate = 1e-5
    m.beats.layer_decay = 1.0  # in (0, 1]; 1: every part of the encoder at learning_rate
    # frames -> clip output: 'mean' (the seed), 'max', 'linear_softmax' or 'attention'
    m.pooling = "mean"
    m.dtype = "float32"  # compute dtype of matmuls/convs ('bfloat16' keeps float32 params)
    # 'xla' (lax.conv), 'im2col' (one matmul over 9 shifted inputs: the same numbers; faster on
    # CPU with jax < 0.10) or 'auto' (xla)
    m.conv_impl = "auto"
    # The CPU kernels (sedjax.models.kernels): speed knobs, the same function to float
    # rounding. 'auto' = on with the CPU backend, where they were measured faster
    # (docs/speed.md); the plain Flax path on GPU and TPU. (Fields of type object: they take
    # 'auto' or a value, in a config file and on the command line.)
    # training computes the first block's conv + BatchNorm as one conv whose kernel and bias
    # fold in the batch's statistics (sedjax.models.layers.folded_conv_and_norm): True/False
    m.fold_batch_norm = config_dict.FieldReference("auto", field_type=object)
    # the first block's conv -> BatchNorm -> pool -> ReLU computed this many frames of one clip
    # at a time, so its full-resolution output stays in cache (sedjax.models.conv_pool; with
    # the BatchNorm folded): a number of frames, 0 = whole ('auto': 100 on CPU)
    m.first_block_chunk_frames = config_dict.FieldReference("auto", field_type=object)
    # dropout masks: 'hash' (a counter hash, sedjax.models.dropout) or 'threefry' (flax's draw)
    m.dropout_masks = "auto"

    # ---- training, shared by both passes ----------------------------------------------------
    def pass_config(batch_size: int) -> ml_collections.ConfigDict:
        p = ml_collections.ConfigDict()
        p.batch_size = batch_size
        p.num_epochs = 100
        p.learning_rate = 1e-3
        # one learning rate per run (config.num_runs), replacing learning_rate; () = none
        p.learning_rates = ()
        p.adam_b1 = 0.9
        p.adam_b2 = 0.999
        p.adam_eps = 1e-7  # Keras' epsilon
        p.bce_eps = 1e-7  # probabilities are clipped to [eps, 1-eps] in the loss, as Keras does
        p.early_stopping_patience = 15
        p.early_stopping_min_delta = 0.01
        p.early_stopping_start_epoch = 5  # no stopping before this epoch
        p.val_threshold = 0.5  # threshold of the validation macro F1 that drives early stopping
        p.eval_batch_size = 128
        return p

    c.pass1 = pass_config(batch_size=16)
    c.pass1.val_fraction = 0.2  # random 20 % of the weak clips held out for validation
    c.pass1.threshold_grid = tuple(round(0.1 * i, 1) for i in range(11))  # per-class thresholds
    c.pass2 = pass_config(batch_size=128)
    # The seed trains pass 2 from scratch; True starts it from the best pass-1 weights instead
    # (a sedjax option for short CPU runs, off in the baseline).
    c.pass2.init_from_pass1 = False

    # ---- post-processing and evaluation -----------------------------------------------------
    c.postprocess = pp = ml_collections.ConfigDict()
    pp.threshold = 0.5
    # in output frames (~1 s): one length, or one per class in data.classes' order. Output frame
    # i starts at i * hop_length * time pooling / sample_rate seconds (0.02 s here).
    pp.median_filter = ml_collections.FieldReference(51, field_type=object)  # int or tuple
    # Tuned post-processing (sedjax/metrics/tuning.py), on the validation split only, per class:
    # method 'median_filter': a length from the grid median_filters (output frames); () = not
    # tuned (the seed: one fixed length). method 'csebbs': change-point bounding boxes
    # (sedjax/metrics/csebbs.py; the optional sebbs package) from the grid in `csebbs`. metric: what a
    # class's choice maximizes on validation: 'event_f1' (sed_eval, at `threshold`), 'psds1'
    # or 'collar_f1' (sed_scores_eval, over thresholds)
    pp.tune = t = ml_collections.ConfigDict()
    t.method = "median_filter"
    t.median_filters = ()
    t.metric = "event_f1"
    t.csebbs = ml_collections.ConfigDict()  # sebbs.csebbs.tune's default grid
    t.csebbs.step_filter_lengths = (0.32, 0.48, 0.64)  # seconds
    t.csebbs.merge_thresholds_abs = (0.15, 0.2, 0.3)
    t.csebbs.merge_thresholds_rel = (1.5, 2.0, 3.0)

    c.evaluation = e = ml_collections.ConfigDict()
    e.t_collar = 0.2
    e.percentage_of_length = 0.2
    e.evaluate_onset = True
    e.evaluate_offset = True
    e.event_matching_type = "optimal"
    e.segment_seconds = 1.0
    # threshold-independent scores (sed_scores_eval): DCASE 2021-2023 Task 4's PSDS1 and PSDS2
    # and the best collar-based F1 over thresholds (sedjax.metrics.psds.Settings)
    e.psds = ml_collections.ConfigDict()
    e.psds.psds = ml_collections.ConfigDict()
    e.psds.psds.psds1 = ml_collections.ConfigDict(dict(
        dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
        max_efpr=100.0, unit_of_time="hour"))
    e.psds.psds.psds2 = ml_collections.ConfigDict(dict(
        dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
        max_efpr=100.0, unit_of_time="hour"))
    e.psds.collar = ml_collections.ConfigDict(dict(onset_collar=0.2, offset_collar=0.2,
                                                   offset_collar_rate=0.2))
    e.psds.time_decimals = 6
    e.psds.num_jobs = 1

    # ---- runtime ----------------------------------------------------------------------------
    c.runtime = r = ml_collections.ConfigDict()
    r.features_on_device = "auto"  # 'auto' (when they fit), 'always' or 'never' (stream)
    r.device_memory_fraction = 0.5  # share of device memory the resident features may take
    r.prefetch = 2  # batches prefetched when streaming from the memmap cache
    r.log_every_epochs = 1
    # Average gradients and BatchNorm moments over devices in one fixed order, so that a run
    # gives the same numbers however its devices are split among processes (2 processes x 2
    # devices == 4 x 1; sedjax.system.sharding.device_mean); False: a plain all-reduce (pmean),
    # 1/devices of the traffic, for large models on many devices, whose results then differ
    # by rounding between process layouts
    r.ordered_reductions = True
    r.predict_batch_size = 128  # clips per prediction step on the test/eval splits
    r.piano_roll_clips = 4  # test clips drawn in piano_roll.png
    # JAX's persistent compilation cache: 'default' (~/.cache/sedjax/jax_compilation, or under
    # $SEDJAX_CACHE_DIR / $XDG_CACHE_HOME), a folder, or '' (off); a second run of a config
    # loads its compiled programs (sedjax/system/compilation_cache.py)
    r.compilation_cache = "default"
    return c
