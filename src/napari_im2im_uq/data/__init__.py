"""Data for image-to-image uncertainty: simulators and readers of the real data sets (numpy only).

Simulators
    :func:`synthetic_em_tissue` (EM-like tissue with membrane/mitochondria labels, 2-D or 3-D),
    :func:`degrade_tem` (TEM at a 4x coarser pixel: binning and short-exposure noise, or the
    paper's nearest down-sampling),
    :func:`cell_phase_object`, :func:`simulate_dpc`, :func:`dpc_transfer_functions` and
    :func:`dpc_tikhonov` (quantitative phase from oblique-illumination images, and the classical
    Tikhonov baseline).
Readers
    :func:`shared_data_root`, :func:`load_em_drosophila`, :func:`load_isbi2012` and
    :func:`load_qpi_dpc` read ``../shared/data`` (or ``$NAPARI_IM2IM_UQ_DATA``);
    :func:`read_pairs` / :func:`read_images` read the user's own training pairs (TIFF,
    ``.npy``, zarr arrays, folders of them).

Nothing here imports torch, napari or Qt.
"""

from ._calibration_sets import tem_calibration_tiles
from ._em import degrade_tem, synthetic_em_tissue
from ._pairs import Pairs, read_images, read_pairs
from ._qpi import cell_phase_object, dpc_tikhonov, dpc_transfer_functions, simulate_dpc
from ._readers import load_em_drosophila, load_isbi2012, load_qpi_dpc, shared_data_root

__all__ = [
    "Pairs",
    "cell_phase_object",
    "degrade_tem",
    "dpc_tikhonov",
    "dpc_transfer_functions",
    "load_em_drosophila",
    "load_isbi2012",
    "load_qpi_dpc",
    "read_images",
    "read_pairs",
    "shared_data_root",
    "simulate_dpc",
    "synthetic_em_tissue",
    "tem_calibration_tiles",
]
