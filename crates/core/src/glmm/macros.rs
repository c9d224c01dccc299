//! `with_kernel!`: the one dispatch from (family, link) to a monomorphised row kernel, once
//! per evaluation, so that the loops over rows inline the family's formulas.

macro_rules! with_kernel {
    ($self:ident, $k:ident => $body:expr) => {
        match ($self.dist, $self.link) {
            ($crate::glmm::Dist::Binomial, $crate::glmm::Link::Logit) => {
                let $k = $crate::glmm::kernel::LogitK;
                $body
            }
            ($crate::glmm::Dist::Poisson, $crate::glmm::Link::Log) => {
                let $k = $crate::glmm::kernel::PoissonLogK;
                $body
            }
            (dist, link) => {
                let $k = $crate::glmm::kernel::GenericK { dist, link };
                $body
            }
        }
    };
}
