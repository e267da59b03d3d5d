"""Why a segmentation set-up would not train, found before it does, on any Keras model.

    report = diagnose(model, images, masks)   # a Report of Findings: what, why, fix

The modules, one concern each: `report` (Finding, Report), `reading` (what the model and its
loss are, read from the objects and one forward pass), `model` (the output and head against
the loss), `labels` (the masks), `probes` (one batch forward and backward), `setup` (a
configured U-Net's shapes and encoder), `fixes` (the words of each fix: Keras terms or config
keys) and `run` (diagnose, the one entry point). The collapse monitors' arithmetic is
seg.monitor's.
"""

from seg.diagnostics.model import Context, check_head, check_head_and_loss
from seg.diagnostics.reading import first_output
from seg.diagnostics.report import Finding, PreflightError, Report
from seg.diagnostics.run import diagnose
from seg.diagnostics.setup import check_encoder, shape_plan

__all__ = ["Context", "Finding", "PreflightError", "Report", "check_encoder", "check_head",
           "check_head_and_loss", "diagnose", "first_output", "shape_plan"]
