"""Datasets: the registry (datasets.yaml), converters per source layout, patient-level splits, phantoms."""
