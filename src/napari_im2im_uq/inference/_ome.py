"""OME-NGFF 0.5 image metadata, written and validated through ``yaozarrs``.

The ``ome`` attribute of each image group of a store (an output, a calibrated product) is built
from yaozarrs' pydantic models of the specification (``yaozarrs.v05``), so what is written is
checked against the specification when it is made, and :func:`validate_group` checks a group as
a reader would (``yaozarrs.validate_ome_object``). Nothing here is written by hand.
"""

from __future__ import annotations

__all__ = ["image_metadata", "level_transform", "validate_group"]

_KINDS = {"C": "channel", "Z": "space", "Y": "space", "X": "space"}


def level_transform(scale, translation, axes: str, level: int):
    """Scale and translation of pyramid level ``level`` (2**level coarser in Y and X).

    A level-``k`` pixel covers ``2**k`` level-0 pixels along Y and X, so its centre lies
    ``(2**k - 1) / 2`` level-0 pixels past the first one's.

    Examples
    --------
    >>> level_transform([1.0, 0.5, 0.5], [0.0, -0.25, -0.25], "ZYX", 1)
    ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    f = 2**level
    s, t = [], []
    for a, sc, tr in zip(axes, scale, translation, strict=True):
        if a in "YX":
            s.append(float(sc) * f)
            t.append(float(tr) + float(sc) * (f - 1) / 2.0)
        else:
            s.append(float(sc))
            t.append(float(tr))
    return s, t


def image_metadata(name: str, axes: str, scale, translation, *, unit=None, levels: int = 1):
    """Return the ``ome`` attribute of an image group with ``levels`` datasets ``"0"``, ``"1"``...

    Parameters
    ----------
    name : str
    axes : str
        Letters of "CZYX" in the array's order.
    scale, translation : sequence of float
        Level 0's coordinate transformations, one number per axis.
    unit : str, optional
        OME unit of the spatial axes.
    levels : int
        Resolution levels, each 2x coarser in Y and X than the one before.

    Returns
    -------
    dict
        Validated by ``yaozarrs.v05.Image`` (a ``pydantic.ValidationError`` otherwise).

    Examples
    --------
    >>> ome = image_metadata("prediction", "YX", [1.0, 1.0], [0.0, 0.0], levels=2)
    >>> ome["version"], [d["path"] for d in ome["multiscales"][0]["datasets"]]
    ('0.5', ['0', '1'])
    """
    from yaozarrs import v05

    axis_list = []
    for a in axes:
        kind = _KINDS[a]
        extra = {"unit": unit} if unit and kind == "space" else {}
        axis_list.append({"name": a.lower(), "type": kind, **extra})
    datasets = []
    for k in range(int(levels)):
        s, t = level_transform(scale, translation, axes, k)
        datasets.append(v05.Dataset(path=str(k), coordinateTransformations=[
            v05.ScaleTransformation(scale=s), v05.TranslationTransformation(translation=t)]))
    image = v05.Image(multiscales=[v05.Multiscale(name=name, axes=axis_list,
                                                  datasets=datasets)])
    return image.model_dump(mode="json", exclude_none=True, by_alias=True)


def validate_group(attributes: dict):
    """Validate a group's attributes (``{"ome": ...}``) as OME-NGFF 0.5; return the model.

    Raises ``pydantic.ValidationError`` naming the field at fault.

    Examples
    --------
    >>> ome = image_metadata("w", "YX", [1.0, 1.0], [0.0, 0.0])
    >>> type(validate_group({"ome": ome}).ome).__name__
    'Image'
    """
    from yaozarrs import v05, validate_ome_object

    return validate_ome_object(dict(attributes), v05.OMEAttributes)
