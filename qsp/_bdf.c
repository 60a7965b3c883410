/* qsp native backend: one dosing segment by a variable-order BDF (NDF), in C (pasted
   after qsp/_rodas4.c, whose Patient, f_eval, LU and starting step it uses).

   Rodas4 evaluates and factors the Jacobian at every step. A BDF method keeps one
   Jacobian, and one factorisation of its Newton matrix, for as long as Newton's
   iteration converges, which is how LSODA and CVODE do a stiff population's work with
   a few dozen Jacobians per patient instead of a thousand (benchmarks/NOTES.md
   section 21). The method: the numerical differentiation formulas of orders 1-5 in
   the quasi-constant step size form of Shampine & Reichelt, "The MATLAB ODE Suite",
   SIAM J. Sci. Comput. 18 (1997) (kappa = -0.1850, -1/9, -0.0823, -0.0415, 0), with the
   backward differences D_0..D_{k+2} kept per step; a step size change rescales them
   (D <- (R U)^T D). Newton: at most 4 simplified iterations on
       (I - c J) dy = c f(t_{n+1}, y) - psi - d,   c = h / alpha_k,
   converged when rate / (1 - rate) |dy| < newton_tol; a failure first refreshes J,
   then halves the step. The local error is error_const_k * d in the RMS norm
   atol + rtol |y|; order and step change only after k + 1 steps at the same size
   (the orders k - 1, k, k + 1 compared). Save times are interpolated with the
   method's own polynomial (so BDF saves are never landed on, whatever `exact`), and
   each segment starts again at order 1 (a dose is a discontinuity). */

#define BDF_MAXORD 5
#define BDF_NEWTON 4
static const double BDF_KAPPA[BDF_MAXORD + 1] = {0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0};

typedef struct {
    double gamma[BDF_MAXORD + 2], alpha[BDF_MAXORD + 1], econst[BDF_MAXORD + 2];
} BdfCoef;

static void bdf_coef(BdfCoef *c) {
    double g = 0.0;
    c->gamma[0] = 0.0;
    for (int k = 1; k <= BDF_MAXORD + 1; k++) c->gamma[k] = (g += 1.0 / k);
    for (int k = 0; k <= BDF_MAXORD; k++) c->alpha[k] = (1.0 - BDF_KAPPA[k]) * c->gamma[k];
    for (int k = 0; k <= BDF_MAXORD; k++) c->econst[k] = BDF_KAPPA[k] * c->gamma[k] + 1.0 / (k + 1);
    c->econst[BDF_MAXORD + 1] = 1.0 / (BDF_MAXORD + 2);
}

/* R(order, factor)[i][j], i, j in 0..order: prod_{m=1..i} (m - 1 - factor j) / m. */
static void bdf_R(int order, double factor, double R[BDF_MAXORD + 1][BDF_MAXORD + 1]) {
    for (int j = 0; j <= order; j++) {
        R[0][j] = 1.0;
        for (int i = 1; i <= order; i++) R[i][j] = R[i - 1][j] * (i - 1 - factor * j) / i;
    }
}

/* The differences of a step size h rescaled to factor h: D[0..order] <- (R U)^T D. */
static void bdf_change(double D[BDF_MAXORD + 3][N], int order, double factor) {
    double R[BDF_MAXORD + 1][BDF_MAXORD + 1], U[BDF_MAXORD + 1][BDF_MAXORD + 1], RU[BDF_MAXORD + 1][BDF_MAXORD + 1];
    double T[BDF_MAXORD + 1][N];
    bdf_R(order, factor, R);
    bdf_R(order, 1.0, U);
    for (int i = 0; i <= order; i++)
        for (int j = 0; j <= order; j++) {
            double s = 0.0;
            for (int m = 0; m <= order; m++) s += R[i][m] * U[m][j];
            RU[i][j] = s;
        }
    for (int j = 0; j <= order; j++)
        for (int n = 0; n < N; n++) {
            double s = 0.0;
            for (int i = 0; i <= order; i++) s += RU[i][j] * D[i][n];
            T[j][n] = s;
        }
    memcpy(D, T, sizeof(double) * (order + 1) * N);
}

/* RMS of v_i w_i, w = 1 / (atol + rtol |y|) (reciprocals: one division per step, not
   one per Newton iteration). */
static double bdf_norm(const double *v, const double *w) {
    /* Four partial sums: one running sum is a chain of N dependent adds (no
       reassociation without -ffast-math), which was 19% of this file's time on CRS. */
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= N; i += 4)
        for (int l = 0; l < 4; l++) { double r = v[i + l] * w[i + l]; s[l] += r * r; }
    for (; i < N; i++) { double r = v[i] * w[i]; s[0] += r * r; }
    return sqrt(((s[0] + s[1]) + (s[2] + s[3])) / N);
}

/* The Newton matrix I - c J as g I - J with g = 1/c (the same factorisation as Rodas4's):
   sparse straight-line LU when the pattern has one and it accepts, else dense. */
typedef struct {
    int sparse;
#ifdef QSP_SNNZ
    double a[QSP_SNNZ], dinv[N];
#endif
    double W[N * N];
    int piv[N];
} BdfLU;

static int bdf_factor(BdfLU *lu, const double *J, double g) {
    lu->sparse = 0;
#ifdef QSP_SNNZ
    lu->sparse = qsp_sfactor(J, g, lu->a, lu->dinv);
    if (lu->sparse) return 1;
#endif
    for (int i = 0; i < N * N; i++) lu->W[i] = -J[i];
    for (int i = 0; i < N; i++) lu->W[i * N + i] += g;
    return lu_factor(lu->W, lu->piv);
}

static void bdf_solve(const BdfLU *lu, double *b) {
#ifdef QSP_SNNZ
    if (lu->sparse) { qsp_ssolve(lu->a, lu->dinv, b); return; }
#endif
    lu_solve(lu->W, lu->piv, b);
}

static int segment_bdf(double ta, double tb, double *y, const Patient *p, const double *u, const double *ts,
                       const int *idx, int m, double *out, double rtol, double atol, int max_steps,
                       long long *steps) {
    double D[BDF_MAXORD + 3][N], J[N * N], ft[N], f[N], yp[N], yn[N], d[N], dy[N], psi[N], sc[N], e[N];
    BdfLU lu;
    BdfCoef cf;
    int js = 0;
#define SAVE_TIME(j) r4_fmin(r4_fmax(ts[idx[j]], ta), tb)
    double t = ta;
    while (js < m && SAVE_TIME(js) <= t) { memcpy(out + (long)idx[js] * N, y, sizeof(double) * N); js++; }
    if (!(tb > ta)) {
        for (; js < m; js++) memcpy(out + (long)idx[js] * N, y, sizeof(double) * N);
        return 0;
    }
    bdf_coef(&cf);
    double newton_tol = r4_fmax(10.0 * 2.220446049250313e-16 / rtol, r4_fmin(0.03, sqrt(rtol)));
    f_eval(t, y, p, u, f);
    memset(J, 0, sizeof(J)); /* qsp_jac writes only the structural non-zeros */
    memset(ft, 0, sizeof(ft));
    double tt = t;
    qsp_jac(&tt, y, p->p, p->qj, ft, J);
    int current_jac = 1, have_lu = 0, order = 1, n_equal = 0, n_steps = 0;
    double c_lu = 1.0;
    double h = r4_fmin(initial_step_p(t, y, f, p, u, rtol, atol, 0.5), tb - ta);
    memset(D, 0, sizeof(D));
    memcpy(D[0], y, sizeof(double) * N);
    for (int i = 0; i < N; i++) D[1][i] = f[i] * h;
    while (t < tb) {
        double tn, err_norm = INFINITY, safety = 0.9;
        int accepted = 0;
        while (!accepted) {
            if (n_steps >= max_steps) return 1;
            if (!(h > 1e-14 * r4_fmax(1.0, fabs(t)))) return 2;
            n_steps++;
            (*steps)++;
            tn = t + h;
            if (tn >= tb) { /* land on the segment's end */
                tn = tb;
                bdf_change(D, order, (tn - t) / h);
                h = tn - t;
                n_equal = 0;
            }
            /* Row by row over the differences (contiguous in i, so vectorised). */
            double ia = 1.0 / cf.alpha[order];
            for (int i = 0; i < N; i++) { yp[i] = D[0][i] + D[1][i]; psi[i] = cf.gamma[1] * D[1][i]; }
            for (int k = 2; k <= order; k++)
                for (int i = 0; i < N; i++) { yp[i] += D[k][i]; psi[i] += cf.gamma[k] * D[k][i]; }
            for (int i = 0; i < N; i++) {
                psi[i] *= ia;
                sc[i] = 1.0 / (atol + rtol * fabs(yp[i]));
            }
            double c = h / cf.alpha[order];
            int converged = 0, n_iter = 0;
            for (;;) {
                /* The factorisation is kept while c is within 30% of the c it was made
                   with (CVODE's rule, dgmax = 0.3); the correction is then scaled by
                   2 r / (1 + r), r = c / c_lu: 1 for the stiff components, whose
                   correction does not depend on c, and near r for the others (CVODE's
                   2 / (1 + gamrat), in this scaling). */
                if (!have_lu || fabs(c / c_lu - 1.0) > 0.3) {
                    if (!bdf_factor(&lu, J, 1.0 / c)) { have_lu = 0; break; } /* singular: as no convergence */
                    have_lu = 1;
                    c_lu = c;
                }
                double r = c / c_lu, corr = r == 1.0 ? 1.0 : 2.0 * r / (1.0 + r);
                /* Simplified Newton from the predictor. */
                double old = -1.0;
                memcpy(yn, yp, sizeof(yn));
                memset(d, 0, sizeof(d));
                for (n_iter = 1; n_iter <= BDF_NEWTON; n_iter++) {
                    f_eval(tn, yn, p, u, f);
                    double ic = 1.0 / c;
                    for (int i = 0; i < N; i++) dy[i] = f[i] - (psi[i] + d[i]) * ic; /* (c f - psi - d) / c */
                    bdf_solve(&lu, dy);
                    if (corr != 1.0)
                        for (int i = 0; i < N; i++) dy[i] *= corr;
                    double nrm = bdf_norm(dy, sc);
                    if (!isfinite(nrm)) break; /* a non-finite f: as no convergence */
                    double rate = old >= 0.0 ? nrm / old : -1.0;
                    if (rate >= 0.0) {
                        double rk = rate;
                        for (int j = n_iter; j < BDF_NEWTON; j++) rk *= rate; /* rate^(BDF_NEWTON - n_iter + 1) */
                        if (rate >= 1.0 || rk / (1.0 - rate) * nrm > newton_tol) break;
                    }
                    for (int i = 0; i < N; i++) { yn[i] += dy[i]; d[i] += dy[i]; }
                    if (nrm == 0.0 || (rate >= 0.0 && rate / (1.0 - rate) * nrm < newton_tol)) { converged = 1; break; }
                    old = nrm;
                }
                if (converged || current_jac) break;
                tt = tn;
                qsp_jac(&tt, yp, p->p, p->qj, ft, J);
                current_jac = 1;
                have_lu = 0;
            }
            if (!converged) {
                h *= 0.5;
                bdf_change(D, order, 0.5);
                n_equal = 0;
                continue;
            }
            if (n_iter > BDF_NEWTON) n_iter = BDF_NEWTON;
            safety = 0.9 * (2 * BDF_NEWTON + 1) / (2 * BDF_NEWTON + n_iter);
            for (int i = 0; i < N; i++) { sc[i] = 1.0 / (atol + rtol * fabs(yn[i])); e[i] = cf.econst[order] * d[i]; }
            err_norm = all_finite(yn) ? bdf_norm(e, sc) : INFINITY;
            if (err_norm > 1.0) {
                double factor = isfinite(err_norm) ? r4_fmax(0.2, safety * pow(err_norm, -1.0 / (order + 1))) : 0.2;
                h *= factor;
                bdf_change(D, order, factor);
                n_equal = 0; /* Newton converged: the factorisation is kept for the smaller step */
            } else {
                accepted = 1;
            }
        }
        current_jac = 0;
        n_equal++;
        for (int i = 0; i < N; i++) {
            D[order + 2][i] = d[i] - D[order + 1][i];
            D[order + 1][i] = d[i];
        }
        for (int k = order; k >= 0; k--)
            for (int i = 0; i < N; i++) D[k][i] += D[k + 1][i];
        /* Saves in (t, tn]: the interpolating polynomial of this step,
           y(s) = D_0 + sum_{k=1..order} D_k prod_{j<k} (s - tn + j h) / ((j + 1) h). */
        for (; js < m && SAVE_TIME(js) <= tn; js++) {
            double s = SAVE_TIME(js), pr = 1.0, *o = out + (long)idx[js] * N;
            memcpy(o, D[0], sizeof(double) * N);
            for (int k = 1; k <= order; k++) {
                pr *= (s - (tn - (k - 1) * h)) / (k * h);
                for (int i = 0; i < N; i++) o[i] += D[k][i] * pr;
            }
            if (s == tn) memcpy(o, D[0], sizeof(double) * N);
        }
        t = tn;
        if (n_equal < order + 1) continue;
        /* Order and step: the largest step among orders order - 1, order, order + 1. */
        double em = INFINITY, ep = INFINITY;
        for (int i = 0; i < N; i++) sc[i] = 1.0 / (atol + rtol * fabs(D[0][i]));
        if (order > 1) {
            for (int i = 0; i < N; i++) e[i] = cf.econst[order - 1] * D[order][i];
            em = bdf_norm(e, sc);
        }
        if (order < BDF_MAXORD) {
            for (int i = 0; i < N; i++) e[i] = cf.econst[order + 1] * D[order + 2][i];
            ep = bdf_norm(e, sc);
        }
        double fm = em > 0.0 ? pow(em, -1.0 / order) : INFINITY, f0 = err_norm > 0.0 ? pow(err_norm, -1.0 / (order + 1)) : INFINITY,
               fp = ep > 0.0 ? pow(ep, -1.0 / (order + 2)) : INFINITY;
        if (order <= 1) fm = 0.0;
        if (order >= BDF_MAXORD) fp = 0.0;
        double best = f0;
        int delta = 0;
        if (fm > best) { best = fm; delta = -1; }
        if (fp > best) { best = fp; delta = 1; }
        double factor = r4_fmin(10.0, safety * best);
        n_equal = 0;
        /* A small increase at the same order is not worth new differences (CVODE waits
           for 1.5; 1.2 here): the step and the factorisation stay. */
        if (delta == 0 && factor >= 1.0 && factor < 1.2) continue;
        order += delta;
        h *= factor;
        bdf_change(D, order, factor);
    }
    memcpy(y, D[0], sizeof(double) * N);
    for (; js < m; js++) memcpy(out + (long)idx[js] * N, y, sizeof(double) * N);
    return 0;
#undef SAVE_TIME
}
