"""Export: what a trained policy does, as files a risk engine without Python or torch can use.

* :mod:`fundgym.agents.export.schedule`: the parameters the policy sets along one scenario
  (CSV/JSON); :mod:`fundgym.agents.export.markets_schedule` the same for a multi-market run,
  per market;
* :mod:`fundgym.agents.export.table`: a state-conditioned lookup table distilled from the policy;
* :mod:`fundgym.agents.export.onnx`: the network with normalisation and natural-unit outputs, as
  ONNX.

The readers of the schedule and table formats, and the policies that replay them, live in
:mod:`fundgym.agents.policies.replay`.
"""

from fundgym.agents.export.markets_schedule import export_markets_schedule
from fundgym.agents.export.onnx import ExportError, OnnxExport, export_onnx
from fundgym.agents.export.schedule import ScheduleError, ScheduleExport, export_schedule
from fundgym.agents.export.table import TableError, TableExport, distill_table

__all__ = [
    "ExportError",
    "OnnxExport",
    "ScheduleError",
    "ScheduleExport",
    "TableError",
    "TableExport",
    "distill_table",
    "export_markets_schedule",
    "export_onnx",
    "export_schedule",
]
