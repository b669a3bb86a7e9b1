"""Export: what a trained policy does, as files a risk engine without Python or torch can use.

* :mod:`agents.export.schedule`: the parameters the policy sets along one scenario (CSV/JSON);
* :mod:`agents.export.table`: a state-conditioned lookup table distilled from the policy;
* :mod:`agents.export.onnx`: the network with normalisation and natural-unit outputs, as ONNX.

The readers of the schedule and table formats, and the policies that replay them, live in
:mod:`agents.policies.replay`.
"""

from agents.export.onnx import ExportError, OnnxExport, export_onnx
from agents.export.schedule import ScheduleError, ScheduleExport, export_schedule
from agents.export.table import TableError, TableExport, distill_table

__all__ = [
    "ExportError",
    "OnnxExport",
    "ScheduleError",
    "ScheduleExport",
    "TableError",
    "TableExport",
    "distill_table",
    "export_onnx",
    "export_schedule",
]
