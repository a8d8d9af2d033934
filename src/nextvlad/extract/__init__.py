"""Features of one's own videos, as Google's YouTube-8M extractor makes them: frames chosen at
1 fps, Inception-v3 (inception-2015-12-05) ``pool_3``, Google's PCA and 8-bit quantization, and
VGGish audio. Imports no model code (``nextvlad.models``): like ``nextvlad.data`` it stands
apart from the classifiers."""
