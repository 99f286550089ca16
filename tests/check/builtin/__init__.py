"""Tests of the built-in scanner: images built here from real files, real advisory data."""
