"""Models for the tests of alectio's ModelContract: ``good`` honours every
rule; each other module is ``good`` with one realistic mistake."""
