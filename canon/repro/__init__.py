"""A small-scale reproduction of the paper's findings: train, fill a zoo, measure, report."""
