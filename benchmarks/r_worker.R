# Measure one benchmark case in R (lme4, or glmmTMB for structured covariances); run.py starts
# one Rscript per cell:  Rscript benchmarks/r_worker.R SPEC.json
#
# SPEC.json is cases.r_spec(case) plus "repeats" and "budget": the resolved CSV, the columns,
# each factor's level order (null: labels sorted, numerically when all are digits, as
# cases._categorical does), the two-level factor response to code 0/1 (first level = 0), the
# formula, family, link, REML flag and fitter. The frame is therefore the one the Python tools
# get from cases.load_frame.
#
# Steps, as worker.py: load + prepare the data (untimed), one warm-up fit (reported as the
# first call), then up to `repeats` timed fits until `budget` seconds are spent. Time is
# system.time(gcFirst = FALSE)[["elapsed"]] around the fit call (1 ms resolution); no gc()
# between fits, so R's collector runs as it would for a user (worker.py does the same in
# Python). Calls use each package's default controls:
#   gaussian            lme4::lmer(f, data, REML = reml)
#   binomial, Gamma,    lme4::glmer(f, data, family = binomial / Gamma(link = ...)
#   inverse.gaussian      / inverse.gaussian(link = ...))
#   negative.binomial   lme4::glmer.nb(f, data)        (theta estimated by lme4's optTheta)
#   fitter glmmTMB      glmmTMB::glmmTMB(f, data, family = gaussian(), REML = reml)
#
# Memory, in the fields of bench/lme4_timings.json: fit_peak_mb = R heap growth during the fits
# (gc() "max used" after the fits, gc(reset = TRUE) just before, minus "used" before; excludes C
# allocations such as CHOLMOD's or TMB's); process_peak_mb = the process's max RSS (VmHWM,
# R + packages + data + all fits). rss_fit_peak_mb is the RSS high-water mark during the fits
# above the RSS before them (peak mark reset through /proc/self/clear_refs), the Python
# workers' fit peak, for comparison.
#
# Protocol (worker.py's): one JSON object per line on stdout: {"event": "ready"}, one
# {"event": "fit", "s": ...} per fit, then {"event": "done", "status": "ok" | "n/a" | "error",
# ...}. Everything else R prints goes to stderr.

proto <- file("/dev/stdout", open = "w", raw = TRUE)
sink(stderr())  # packages' prints must not mix with the protocol lines

json_str <- function(x) {
  x <- gsub("\\\\", "\\\\\\\\", x)
  x <- gsub("\"", "\\\\\"", x)
  paste0("\"", gsub("[[:cntrl:]]", " ", x), "\"")
}

# jsonlite may be the very package that is missing: the n/a answer is written by hand.
emit_raw <- function(text) {
  writeLines(text, proto)
  flush(proto)
}

done_status <- function(status, reason, version = NULL) {
  v <- if (is.null(version)) "" else paste0(", \"version\": ", json_str(version))
  emit_raw(paste0("{\"event\": \"done\", \"status\": ", json_str(status),
                  ", \"reason\": ", json_str(substr(reason, 1, 300)), v, "}"))
  quit(save = "no", status = 0)
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) done_status("error", "usage: Rscript r_worker.R SPEC.json")

need <- function(pkg, deb) {
  if (!requireNamespace(pkg, quietly = TRUE))
    done_status("n/a", sprintf("R package %s not installed (apt-get install %s)", pkg, deb))
}
need("jsonlite", "r-cran-jsonlite")
spec <- jsonlite::fromJSON(args[[1]], simplifyVector = TRUE)
fitter <- spec$fitter
need("lme4", "r-cran-lme4")
if (fitter == "glmmTMB") need("glmmTMB", "r-cran-glmmtmb")
lme4_version <- as.character(packageVersion("lme4"))

emit <- function(obj) emit_raw(jsonlite::toJSON(obj, auto_unbox = TRUE, digits = NA,
                                                 na = "null", null = "null"))

status_mb <- function(field) {
  lines <- tryCatch(readLines("/proc/self/status"), error = function(e) character())
  hit <- grep(paste0("^", field, ":"), lines, value = TRUE)
  if (length(hit) == 0) return(NA_real_)
  as.numeric(strsplit(trimws(sub(".*:", "", hit[[1]])), "[[:space:]]+")[[1]][[1]]) / 1024
}

reset_peak <- function() {
  ok <- tryCatch({
    cat("5", file = "/proc/self/clear_refs")
    TRUE
  }, error = function(e) FALSE, warning = function(w) FALSE)
  ok
}

# ------------------------------------------------------------------ data, as cases.load_frame

sorted_levels <- function(labels) {
  u <- unique(labels)
  if (all(grepl("^[0-9]+$", u))) u[order(as.numeric(u))] else sort(u, method = "radix")
}

load_frame <- function(spec) {
  factor_cols <- names(spec$factors)
  classes <- setNames(rep("character", length(factor_cols)), factor_cols)
  # pandas reads empty fields and "NA" as missing; so does this.
  d <- utils::read.csv(spec$data, colClasses = classes, na.strings = c("", "NA"),
                       check.names = FALSE, stringsAsFactors = FALSE)
  d <- d[, spec$columns, drop = FALSE]
  for (col in spec$columns) {
    if (col %in% factor_cols) {
      levels <- spec$factors[[col]]
      if (is.null(levels)) levels <- sorted_levels(d[[col]][!is.na(d[[col]])])
      d[[col]] <- factor(d[[col]], levels = levels)
    } else {
      d[[col]] <- as.numeric(d[[col]])
    }
  }
  if (!is.null(spec$binary_response)) {
    col <- spec$binary_response
    d[[col]] <- as.numeric(as.integer(d[[col]]) != 1L)
  }
  d
}

# ------------------------------------------------------------------ fits

make_fit <- function(spec, d) {
  f <- stats::as.formula(spec$formula, env = globalenv())
  reml <- isTRUE(spec$reml)
  link <- spec$link
  if (fitter == "glmmTMB") {
    if (spec$family != "gaussian") stop("glmmTMB cases are gaussian only so far")
    return(function() glmmTMB::glmmTMB(f, data = d, family = stats::gaussian(), REML = reml))
  }
  switch(spec$family,
    gaussian = function() lme4::lmer(f, data = d, REML = reml),
    binomial = {
      fam <- if (is.null(link)) stats::binomial() else stats::binomial(link = link)
      function() lme4::glmer(f, data = d, family = fam)
    },
    Gamma = {
      fam <- if (is.null(link)) stats::Gamma() else stats::Gamma(link = link)
      function() lme4::glmer(f, data = d, family = fam)
    },
    inverse.gaussian = {
      fam <- if (is.null(link)) stats::inverse.gaussian() else stats::inverse.gaussian(link = link)
      function() lme4::glmer(f, data = d, family = fam)
    },
    negative.binomial = function() lme4::glmer.nb(f, data = d),
    stop("no R call for family ", spec$family)
  )
}

# Convergence remarks, the way the Python adapters' "not converged" note reads.
fit_note <- function(fit, warns) {
  notes <- character()
  if (fitter == "glmmTMB") {
    if (!is.null(fit$fit$convergence) && fit$fit$convergence != 0)
      notes <- c(notes, paste("nlminb:", fit$fit$message))
    if (!isTRUE(fit$sdr$pdHess)) notes <- c(notes, "Hessian not positive definite")
  } else {
    msgs <- fit@optinfo$conv$lme4$messages
    if (length(msgs)) notes <- c(notes, msgs)
  }
  unique(gsub("[[:space:]]+", " ", c(notes, warns)))  # lme4's messages span lines
}

measure <- function(spec) {
  d <- load_frame(spec)
  fit_once <- make_fit(spec, d)
  emit(list(event = "ready", nobs = nrow(d)))

  load_peak <- status_mb("VmHWM")
  g <- gc(reset = TRUE)
  heap_before <- sum(g[, 2])  # "used (Mb)" of Ncells + Vcells
  reset <- reset_peak()
  baseline <- status_mb("VmRSS")

  warns <- character()
  first <- system.time(fit <- withCallingHandlers(fit_once(), warning = function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  }), gcFirst = FALSE)[["elapsed"]]
  emit(list(event = "fit", s = first))
  loglik <- as.numeric(stats::logLik(fit))
  note <- fit_note(fit, warns)
  extra <- if (spec$family == "negative.binomial")
    sprintf("theta %.4f", lme4::getME(fit, "glmer.nb.theta")) else character()
  rm(fit)

  times <- numeric()
  while (length(times) < spec$repeats && first + sum(times) < spec$budget) {
    t <- system.time(suppressWarnings(fit_once()), gcFirst = FALSE)[["elapsed"]]
    times <- c(times, t)
    emit(list(event = "fit", s = t))
  }

  heap_max <- sum(gc()[, 6])  # "max used (Mb)" since the reset
  hwm <- status_mb("VmHWM")
  timed <- if (length(times)) times else first
  fitter_note <- if (fitter == "glmmTMB")
    paste("fitted by glmmTMB", as.character(packageVersion("glmmTMB"))) else character()
  list(
    event = "done", status = "ok", version = lme4_version,
    r_version = paste(R.version$major, R.version$minor, sep = "."),
    fitter = if (fitter == "glmmTMB")
      paste("glmmTMB", as.character(packageVersion("glmmTMB"))) else paste("lme4", lme4_version),
    nobs = nrow(d), first_s = first, times_s = I(times),
    median_s = stats::median(timed), min_s = min(timed), reps = length(times),
    loglik = loglik, note = paste(c(fitter_note, extra, note), collapse = "; "),
    baseline_mb = baseline,
    fit_peak_mb = max(heap_max - heap_before, 0),
    rss_fit_peak_mb = if (reset) max(hwm - baseline, 0) else NA_real_,
    process_peak_mb = max(load_peak, hwm, na.rm = TRUE),
    peak_reset = reset
  )
}

out <- tryCatch(measure(spec), error = function(e) {
  list(event = "done", status = "error", version = lme4_version,
       reason = substr(gsub("[[:space:]]+", " ", paste("R:", conditionMessage(e))), 1, 300))
})
emit(out)
