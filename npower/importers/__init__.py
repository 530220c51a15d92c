"""Importers: public measurement data sets turned into npower sample files."""
