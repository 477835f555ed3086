"""Organizing: scan a tree, detect modality/region/label/patient, split by patient."""
