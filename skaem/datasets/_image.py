"""The image task (Section 4.1): points drawn in proportion to pixel intensity.

Pixel (row i, column j) of an H x W image becomes the cell
[j / W, (j + 1) / W) x [(H - 1 - i) / H, (H - i) / H) of the unit square (row 0
at the top, as the image is shown). A point picks a pixel with probability
proportional to its intensity and is dequantised uniformly inside the cell, so
the density is piecewise constant and known exactly.
"""

from os import PathLike

import numpy as np
from sklearn.utils import check_random_state

from ._checks import check_n_samples, check_points

# ITU-R BT.601 luma, the usual grayscale conversion of RGB.
_LUMA = np.array([0.299, 0.587, 0.114])


def _read_image_file(path) -> np.ndarray:
    if str(path).endswith(".npy"):
        return np.load(path)
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow ships with matplotlib
        raise ImportError(
            "Reading an image file needs Pillow (pip install pillow); "
            "or pass the image as an array."
        ) from exc
    with Image.open(path) as image:
        return np.asarray(image)


def image_intensities(image, invert: bool = False) -> np.ndarray:
    """Grayscale intensities in [0, 1] of an image given as an array or a path.

    Parameters
    ----------
    image : array-like of shape (H, W), (H, W, 3) or (H, W, 4), or path
        Grayscale, RGB or RGBA image (alpha is ignored); integer images are
        divided by their type's maximum, float images must lie in [0, 1]. A
        path is read with Pillow (any format it knows) or ``numpy.load``.
    invert : bool, default=False
        Use ``1 - intensity``, for dark drawings on a light background.

    Returns
    -------
    intensities : ndarray of shape (H, W)

    Examples
    --------
    >>> from skaem.datasets import image_intensities
    >>> image_intensities([[0, 255], [51, 102]]).tolist()  # integer pixels, 0-255
    [[0.0, 1.0], [0.2, 0.4]]
    """
    if isinstance(image, str | PathLike):
        image = _read_image_file(image)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        pixels = _to_unit_interval(image[..., :3]) @ _LUMA
    elif image.ndim == 2:
        pixels = _to_unit_interval(image)
    else:
        raise ValueError(
            f"image must have shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}."
        )
    pixels = 1.0 - pixels if invert else pixels
    if pixels.sum() <= 0:
        raise ValueError("image has no positive intensity: there is nothing to sample.")
    return pixels


def _to_unit_interval(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == bool:
        return pixels.astype(float)
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.min() < 0:
            raise ValueError("integer image has negative pixels.")
        # uint8 images use 0-255; wider integer types are taken as 0-255 too when
        # they fit, which is what numpy conversions of 8-bit images produce.
        top = 255 if pixels.max() <= 255 else np.iinfo(pixels.dtype).max
        return pixels.astype(float) / top
    if not np.issubdtype(pixels.dtype, np.floating):
        raise TypeError(f"image pixels must be numbers; got dtype {pixels.dtype}.")
    pixels = pixels.astype(float)
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 1:
        raise ValueError("float image pixels must be finite and lie in [0, 1].")
    return pixels


def make_image(image, n_samples: int = 10000, invert: bool = False, random_state=None):
    """Points on the unit square drawn in proportion to an image's intensity.

    The paper's Einstein task is ``make_image(path_to_einstein_jpg)``; the
    image is not shipped with skaem.

    Parameters
    ----------
    image : array-like or path
        See :func:`image_intensities`.
    n_samples : int, default=10000
        Number of points.
    invert : bool, default=False
        Draw in proportion to ``1 - intensity`` instead.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Column 0 runs left to right, column 1 bottom to top.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem.datasets import make_image
    >>> X = make_image(np.eye(4), 1000, random_state=0)  # light on the diagonal
    >>> X.shape, bool(np.all((X >= 0) & (X < 1)))
    ((1000, 2), True)
    """
    n_samples = check_n_samples(n_samples)
    pixels = image_intensities(image, invert)
    rng = check_random_state(random_state)
    height, width = pixels.shape
    flat = rng.choice(pixels.size, size=n_samples, p=(pixels / pixels.sum()).ravel())
    row, col = np.divmod(flat, width)
    u = rng.uniform(size=(n_samples, 2))
    return np.column_stack([(col + u[:, 0]) / width, (height - 1 - row + u[:, 1]) / height])


def image_log_density(image, X, invert: bool = False) -> np.ndarray:
    """Exact log-density of :func:`make_image` (-inf on dark pixels and off the square).

    Parameters
    ----------
    image : array-like or path
        The image given to :func:`make_image`.
    X : array-like of shape (n_samples, 2)
        Points.
    invert : bool, default=False
        As given to :func:`make_image`.

    Returns
    -------
    log_density : ndarray of shape (n_samples,)

    Examples
    --------
    >>> from skaem.datasets import image_log_density
    >>> image_log_density([[0, 255], [255, 255]], [[0.25, 0.25], [0.25, 0.75]]).round(3)
    array([0.288,  -inf])
    """
    pixels = image_intensities(image, invert)
    height, width = pixels.shape
    X = check_points(X)
    inside = np.all((X >= 0) & (X < 1), axis=1)
    X = np.where(inside[:, None], X, 0.0)  # keeps NaN and far points out of the indexing
    col = np.clip(np.floor(X[:, 0] * width), 0, width - 1).astype(int)
    row = height - 1 - np.clip(np.floor(X[:, 1] * height), 0, height - 1).astype(int)
    density = pixels[row, col] / pixels.sum() * pixels.size
    with np.errstate(divide="ignore"):
        return np.where(inside, np.log(density), -np.inf)
