"""The models layer: ``lmer``, ``glmer`` and ``lm``, each lme4's staged pipeline.

Layer: models (above engine and results: a model function builds the frame, binds the
engine problem, optimises and packs a plain-data result, as lme4's ``lFormula ->
mkLmerDevfun -> optimizeLmer -> mkMerMod``). May import: design, covariance, families,
engine, results, errors, control. Never inference, toolkit, report or app.
"""
from multilevel.models.glmer import glmer, glmer_nb
from multilevel.models.input import engine_input
from multilevel.models.lm import lm
from multilevel.models.lmer import lmer

__all__ = ["lmer", "glmer", "glmer_nb", "lm", "engine_input"]
