"""The LightningModule: the seed's two-stage schedule, losses, and validation through core's tiled inference."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from core.extraction.inference import normalize
from core.metrics import pixel_metrics_from_counts
from core.model import build_model
from core.model.checkpoint import Architecture, LoadReport, ModelInfo, Normalization, RoadModel

from .config import TrainConfig
from .data import IGNORE
from .evaluate import Inference, confusion, predict_tile
from .losses import road_loss


def learning_rates(config: TrainConfig, step: int, steps_per_epoch: int) -> tuple[int, float, float]:
    """(stage, backbone rate, head rate) at a global step: poly (power 0.9) per iteration within each stage, from
    the global step alone, so a resumed run continues on exactly the same curve."""
    c = config
    steps_per_epoch = max(1, steps_per_epoch)
    stage1_steps = c.stage1_epochs * steps_per_epoch
    if step < stage1_steps:
        stage, base, done, total = 1, c.lr_stage1, step, stage1_steps
    else:
        stage, base, done, total = 2, c.lr_stage2, step - stage1_steps, c.stage2_epochs * steps_per_epoch
    factor = max(0.0, 1 - done / max(total, 1)) ** 0.9
    return stage, base * c.backbone_lr_factor * factor, base * factor


class RoadSegmentation(L.LightningModule):
    def __init__(self, config: dict, precision_used: str = "fp32", brightness: list[float] | None = None) -> None:
        super().__init__()
        # precision_used: what `fit` resolved "auto" to on the machine that trained last (recorded in the model file);
        # brightness: the training imagery's range of median brightness (RoadCrops.brightness_range), recorded too
        self.save_hyperparameters({"config": config, "precision_used": precision_used, "brightness": brightness})
        self.config = TrainConfig.from_dict(config)
        self.network = build_model(self.config.model_config())
        self.normalization = Normalization(brightness=tuple(brightness) if brightness else None)
        self.register_buffer("class_weights", torch.tensor(self.config.class_weights, dtype=torch.float32),
                             persistent=False)
        self._confusion = np.zeros(4, np.int64)  # tp, fp, fn, tn over the validation tiles
        self.skipped_steps = 0

    # ------------------------------------------------------------------------------------------ the two stages

    @property
    def stage(self) -> int:
        return 1 if self.current_epoch < self.config.stage1_epochs else 2

    def apply_stage(self) -> None:
        """Stage 1: the backbone's weights do not train and its BatchNorm layers keep their statistics (eval
        mode: `requires_grad=False` alone would still update the running means). Stage 2: everything trains."""
        frozen = self.stage == 1
        for parameter in self.network.backbone.parameters():
            parameter.requires_grad_(not frozen)
        # Lightning restores each submodule's own mode after validation, so stage 2 must switch it back itself.
        self.network.backbone.train(not frozen)

    def on_train_epoch_start(self) -> None:
        self.apply_stage()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning puts the whole module in train mode before each epoch; stage 1 keeps the backbone in eval.
        if self.stage == 1 and self.network.backbone.training:
            self.network.backbone.eval()
        self._set_learning_rates()
        # channels_last: forward + backward of ResNet-18 at 256 px, batch 8, 5.2 s instead of 7.4 s on 2 CPU cores
        # (a whole step 5.9 s instead of 6.5 s), and the layout tensor cores want. Set before every step (a no-op
        # when already set): validation through core puts the network back to contiguous, and a run resumed
        # mid-epoch starts without an epoch start; steps in another layout round differently, and a resumed run
        # must end with the weights of an uninterrupted one.
        self.network.to(memory_format=torch.channels_last)
        # Dropout draws from a generator seeded by (seed, step, process): a resumed run draws what an uninterrupted
        # one would have, without saving and restoring every process's random state.
        torch.manual_seed(hash((self.config.seed, self.global_step, self.global_rank)) & 0x7FFF_FFFF_FFFF)

    def _set_learning_rates(self) -> None:
        _, backbone_rate, head_rate = learning_rates(self.config, self.global_step, self.trainer.num_training_batches)
        backbone_group, head_group = self.optimizers().optimizer.param_groups
        backbone_group["lr"], head_group["lr"] = backbone_rate, head_rate

    def configure_optimizers(self):
        c = self.config
        groups = [{"params": list(self.network.backbone.parameters()), "name": "backbone"},
                  {"params": self.network.head_parameters(), "name": "head"}]
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr_stage1, momentum=0.9, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=c.lr_stage1, weight_decay=c.weight_decay)
        raise ValueError(f"optimizer {c.optimizer!r} is not known; use sgd or adamw")

    # ------------------------------------------------------------------------------------------------ training

    def training_step(self, batch, batch_idx):
        images, target = batch
        logits = self.network(normalize(images, self.normalization).contiguous(memory_format=torch.channels_last))
        loss = road_loss(logits, target, self.config.loss, self.class_weights)
        if not torch.isfinite(loss):
            # A diverging step is skipped (Lightning skips the optimizer step when training_step returns None) and
            # counted; `fit` refuses to finish with non-finite weights.
            self.skipped_steps += 1
            self.log("train/skipped_nonfinite", float(self.skipped_steps))
            return None
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/stage", float(self.stage))
        self.log("lr/head", self.optimizers().optimizer.param_groups[1]["lr"])
        return loss

    # ---------------------------------------------------------------------------------------------- validation

    def road_model(self) -> RoadModel:
        config = self.config.model_config()
        info = ModelInfo(config=config, gsd_m=self.config.gsd_m, normalization=self.normalization)
        return RoadModel(self.network, info, LoadReport("training", "training"), Architecture(config, {}))

    def on_validation_epoch_start(self) -> None:
        self._confusion[:] = 0

    def validation_step(self, batch, batch_idx) -> None:
        """A whole tile through core's tiled, blended, multi-scale inference: the figure a user would get."""
        image, target = (t[0].cpu().numpy() for t in batch)
        c = self.config
        inference = Inference(scales=tuple(c.val_scales), tile=c.val_tile, overlap=c.val_overlap,
                              device=str(self.device))
        _, predicted = predict_tile(self.road_model(), image, target != IGNORE, c.gsd_m, inference)
        self._confusion += confusion(predicted, target)

    def on_validation_epoch_end(self) -> None:
        # Pool the confusion matrices of all processes (DDP splits the tiles), then compute: the mean of
        # per-process IoUs would not be the IoU of the whole validation set.
        counts = self.trainer.strategy.reduce(torch.tensor(self._confusion, device=self.device), reduce_op="sum")
        tp, fp, fn, tn = (int(v) for v in counts.tolist())
        if not tp + fp + fn + tn:
            return
        scores = pixel_metrics_from_counts(tp, fp, fn, tn)
        self.log("val/road_iou", scores["road_iou"], prog_bar=True)
        for name in ("background_iou", "miou", "miou_all_background", "f1", "precision", "recall"):
            self.log(f"val/{name}", scores[name])
