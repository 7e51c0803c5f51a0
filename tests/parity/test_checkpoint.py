"""A Lightning checkpoint as DESED_task's recipe saves it -> `python -m sedjax.convert` -> a
sedjax model folder that sedjax.detect loads, and back to a state dict DESED_task's CRNN loads."""

from .conftest import import_desed_task

import_desed_task()  # skips this module without DESED_task, torch or torchaudio

import copy  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from desed_task.nnet.CRNN import CRNN  # noqa: E402
from desed_task.utils.scaler import TorchScaler  # noqa: E402
from desed_task.utils.schedulers import ExponentialWarmup  # noqa: E402

from sedjax import convert, detect  # noqa: E402
from sedjax.interop import desed_task as interop  # noqa: E402
from sedjax.train import checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def lightning_checkpoint(desed_task_root, tmp_path_factory):
    """(path, hyper_parameters, student state, teacher state) of a .ckpt that Lightning 1.9
    wrote after one training step of a module laid out as DESED_task's SEDTask4 (local/
    sed_trainer.py: hparams from the yaml, sed_student, its deepcopy sed_teacher, an instance
    minmax TorchScaler, Adam + ExponentialWarmup per step, EarlyStopping and ModelCheckpoint
    on val/obj_metric, on_save_checkpoint's extra state dicts)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    torch.set_num_threads(1)
    conf = yaml.safe_load((desed_task_root / "recipes" / "dcase2023_task4_baseline" / "confs"
                           / "default.yaml").read_text())

    class SEDTask4Like(pl.LightningModule):
        def __init__(self, hparams):
            super().__init__()
            self.hparams.update(hparams)
            self.sed_student = CRNN(**hparams["net"])
            self.sed_teacher = copy.deepcopy(self.sed_student)
            self.scaler = TorchScaler("instance", "minmax", (1, 2))
            self.opt = torch.optim.Adam(self.sed_student.parameters(), 1e-3)

        def training_step(self, batch, index):
            _, weak = self.sed_student(self.scaler(batch[0]))
            loss = weak.mean()
            self.log("val/obj_metric", -loss)
            return loss

        def configure_optimizers(self):
            return [self.opt], [{"scheduler": ExponentialWarmup(self.opt, 1e-3, 10),
                                 "interval": "step"}]

        def lr_scheduler_step(self, scheduler, optimizer_idx, metric):
            scheduler.step()

        def on_save_checkpoint(self, ckpt):
            ckpt["sed_student"] = self.sed_student.state_dict()
            ckpt["sed_teacher"] = self.sed_teacher.state_dict()

        def train_dataloader(self):
            x = torch.rand(2, 128, 32) * 10  # 32 frames of 128 mel bands: one quick step
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)

    torch.manual_seed(0)
    module = SEDTask4Like(conf)
    out = tmp_path_factory.mktemp("lightning")
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[EarlyStopping(monitor="val/obj_metric", mode="max", patience=3),
                   # a Path dirpath (DESED_task gives a str): its state then holds a PosixPath
                   ModelCheckpoint(out, monitor="val/obj_metric", save_top_k=1, mode="max")])
    trainer.fit(module)
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    return trainer.checkpoint_callback.best_model_path, conf, state


def test_weights_only_read_of_a_lightning_checkpoint(lightning_checkpoint):
    path, conf, state = lightning_checkpoint
    read = interop.read_lightning_checkpoint(path)
    assert read["state_dict"].keys() == state.keys()
    assert all(np.array_equal(read["state_dict"][k], state[k]) for k in state)
    assert read["scaler"] == {}  # TorchScaler('instance', 'minmax') keeps no statistics
    assert read["hyper_parameters"]["net"] == conf["net"]
    student = interop.variables_from_state_dict(read["state_dict"], "sed_student.")
    back = interop.state_dict_from_variables(student, "sed_student.")
    for k, v in back.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v, state[k], err_msg=k)


def test_convert_and_back(lightning_checkpoint, tmp_path):
    path, conf, state = lightning_checkpoint
    work = tmp_path / "model"
    assert convert.main(["desed_task", path, f"--workdir={work}", "--which=teacher"]) == 0
    config = json.loads((work / "config.json").read_text())
    assert config["data"]["classes"] == list(convert.DESED_CLASSES)
    assert config["model"]["conv_features"] == conf["net"]["nb_filters"]
    assert detect.Detector.from_workdir(work).classes == list(convert.DESED_CLASSES)
    variables, _ = checkpoint.load_model(work)
    teacher = interop.state_dict_from_variables(variables, "sed_teacher.")
    for k, v in teacher.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v, state[k], err_msg=k)

    out = tmp_path / "crnn.pt"
    assert convert.main(["to_desed_task", str(out), f"--workdir={work}"]) == 0
    model = CRNN(**conf["net"])
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v.numpy(), state["sed_teacher." + k], err_msg=k)
