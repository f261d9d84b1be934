"""Layer 3, data on disk: file names and voxel grids (``grid``), atomic writing and image reading
(``io``), split files, the dataset file, untrusted archives, a run folder's file names
(``layout``), the training items' random transforms (``augmentation``) and the TorchIO subjects
and loaders (``loading``)."""
