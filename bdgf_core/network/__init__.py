"""The BDGF multi-branch network (Section III-B/C of the paper) and its selective scan."""
from .bdgf import BDGFConfig, BDGFNet, BDGFOutput
from .selective_scan import selective_scan, selective_scan_reference, selective_scan_torch

__all__ = ["BDGFConfig", "BDGFNet", "BDGFOutput", "selective_scan", "selective_scan_reference",
           "selective_scan_torch"]
