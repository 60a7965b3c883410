/* qsp native backend: the discrete adjoint of qsp/_rodas4.c (pasted after it).

   Reverse mode through each recorded (accepted) step of Rodas4, with the step sizes
   held fixed as diffrax does (the controller is not differentiated). For one step,
       Y_s = y + sum_{j<s} a_sj k_j,   r_s = f(t + alpha_s h, Y_s) + u + gamma_s h f_t(y)
             + sum_{j<s} (c_sj / h) k_j,   M k_s = r_s,   M = I/(gamma h) - J(y),
       y+ = y + sum_{j<5} a_5j k_j + k_5,
   the adjoint runs the stages backwards: rbar_s = M^{-T} kbar_s (the recorded factors,
   transposed), ftbar += gamma_s h rbar_s, ubar += rbar_s, and (Ybar_s, pbar) += f's
   VJP at Y_s (qsp_vjp); finally (ybar, pbar) += the VJP of (f, f_t, J) at y with
   cotangents (rbar_0, ftbar, Jbar), Jbar = sum_s rbar_s k_s^T on J's pattern
   (qsp_svjp, generated from the jaxpr of that VJP: stage 0's point is y, so its VJP
   shares the Jacobian's primal). Boluses pass the adjoint through (dbar_s = ybar at
   the start of segment s); a segment boundary tau moved by dtau moves every later
   state by Phi (F_{s-1}(tau-) - F_s(tau+)) dtau (the jump condition of a solution with
   an event at tau), so Bbar_s = ybar(tau+) . (F_{s-1}(tau, x-) - F_s(tau, x+)).

   Needs qsp_vjp and qsp_svjp (qsp/_native.py, _adjoint_source) and their hoisted slot
   counts QSP_NQV and QSP_NQSV. */

static void lu_solve_t(const double *W, const int *piv, double *b) {
    /* (P W = L U)^T: U^T z = b, L^T w = z, then the row swaps undone in reverse. */
    for (int i = 0; i < N; i++) {
        double s = b[i];
        for (int j = 0; j < i; j++) s -= W[j * N + i] * b[j];
        b[i] = s / W[i * N + i];
    }
    for (int i = N - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < N; j++) s -= W[j * N + i] * b[j];
        b[i] = s;
    }
    for (int k = N - 1; k >= 0; k--)
        if (piv[k] != k) { double t = b[k]; b[k] = b[piv[k]]; b[piv[k]] = t; }
}

typedef struct {
    const double *p;
    double qv[QSP_NQV], qsv[QSP_NQSV];
} AdjPatient;

/* One recorded step backwards: ybar (the adjoint of y+) becomes that of y. The stage
   loop is unrolled so that each stage's coefficients are constants (and the loops over
   earlier stages have fixed length). */
static void step_back(const double *r, const Patient *pp, const AdjPatient *ap, double *ybar, double *pbar,
                      double *ubar) {
    double t = r[0], hh = r[1];
    const double *y = r + 3, *k = r + 3 + N;
    double W[N * N], J[N * N], ft[N];
    int piv[N];
    int sparse = r[2] != 0.0;
    double g = 1.0 / (R_GAMMA * hh);
    if (!sparse) {  /* the dense factors were not recorded: rebuild them */
        double tt = t;
        memset(J, 0, sizeof(J));
        qsp_jac(&tt, y, pp->p, pp->qj, ft, J);
        for (int i = 0; i < N * N; i++) W[i] = -J[i];
        for (int i = 0; i < N; i++) W[i * N + i] += g;
        lu_factor(W, piv);
    }
    double kbar[6][N], rb[6][N], acc[N], Yb[N], Yi[N], ftbar[N], gy[N], gp[QSP_P];
    for (int i = 0; i < N; i++) {
        acc[i] = ybar[i];
        ftbar[i] = 0.0;
        kbar[5][i] = ybar[i];
        for (int j = 0; j < 5; j++) kbar[j][i] = R_A[5][j] * ybar[i];
    }
#pragma GCC unroll 6
    for (int s = 5; s >= 0; s--) {
        double *rs = rb[s];
        memcpy(rs, kbar[s], sizeof(double) * N);
#ifdef QSP_SNNZ
        if (sparse) qsp_ssolve_t(r + 3 + 7 * N, r + 3 + 7 * N + QSP_SNNZ, rs); else
#endif
        lu_solve_t(W, piv, rs);
        double gh = R_GI[s] * hh;
        for (int i = 0; i < N; i++) {
            ftbar[i] += gh * rs[i];
            ubar[i] += rs[i];
        }
        for (int j = 0; j < s; j++) {
            double c = R_C[s][j] / hh;
            for (int i = 0; i < N; i++) kbar[j][i] += c * rs[i];
        }
        if (s == 0) break;  /* stage 0's VJP is at y: fused into qsp_svjp below */
        for (int i = 0; i < N; i++) {
            double v = y[i];
            for (int j = 0; j < s; j++) v += R_A[s][j] * k[j * N + i];
            Yi[i] = v;
        }
        double ts = t + R_ALPHA[s] * hh;
        qsp_vjp(&ts, Yi, ap->p, rs, ap->qv, Yb, gp);
        for (int i = 0; i < QSP_P; i++) pbar[i] += gp[i];
        for (int i = 0; i < N; i++) acc[i] += Yb[i];
        for (int j = 0; j < s; j++)
            for (int i = 0; i < N; i++) kbar[j][i] += R_A[s][j] * Yb[i];
    }
    /* Stage 0 (f at y, cotangent rb[0]) with the VJP of (f_t, J) at y, Jbar = sum_s rb_s k_s^T. */
    double tt = t;
    qsp_svjp(&tt, y, pp->p, rb[0], ftbar, &rb[0][0], k, ap->qsv, gy, gp);
    for (int i = 0; i < N; i++) ybar[i] = acc[i] + gy[i];
    for (int i = 0; i < QSP_P; i++) pbar[i] += gp[i];
}

/* Patient pt's cotangents from its tape and the cotangent obar (n_ts x N) of its saved
   states: y0bar (N), pbar (QSP_P), dbar and ubar (n_seg x N), Bbar (n_seg + 1). */
static void adjoint_patient(const Tape *tp, int pt, int n_seg, int n_ts, const double *params, const double *B,
                            const double *dose, const double *u, const int *owner, const double *obar,
                            double *y0bar, double *pbar, double *dbar, double *ubar, double *Bbar) {
    int idx[n_ts > 0 ? n_ts : 1], start[n_seg + 1];
    Patient pp;
    AdjPatient ap;
    pp.p = ap.p = params + (long)pt * QSP_P;
    qsp_jac_pre(pp.p, pp.qj);
    qsp_rhs_pre(pp.p, pp.qr);
    qsp_vjp_pre(ap.p, ap.qv);
    qsp_svjp_pre(ap.p, ap.qsv);
    const int *op = owner + (long)pt * n_ts;
    const double *ob = obar + (long)pt * n_ts * N;
    const double *Bp = B + (long)pt * (n_seg + 1);
    double *pb = pbar + (long)pt * QSP_P, *db = dbar + (long)pt * n_seg * N, *ub = ubar + (long)pt * n_seg * N;
    double *Bb = Bbar + (long)pt * (n_seg + 1), *y0b = y0bar + (long)pt * N;
    group_saves(n_seg, n_ts, op, idx, start);
    double ybar[N];
    memset(ybar, 0, sizeof(ybar));
    for (int i = 0; i < QSP_P; i++) pb[i] = 0.0;
    for (int s = 0; s <= n_seg; s++) Bb[s] = 0.0;
    for (int s = n_seg - 1; s >= 0; s--) {
        const double *us = u + ((long)pt * n_seg + s) * N;
        double *ubs = ub + (long)s * N;
        for (int i = 0; i < N; i++) ubs[i] = 0.0;
        int jj = start[s + 1] - 1;
        for (int r = tp->seg_first[s + 1] - 1; r >= tp->seg_first[s]; r--) {
            for (; jj >= start[s] && tp->save_g[idx[jj]] == r + 1; jj--)
                for (int i = 0; i < N; i++) ybar[i] += ob[(long)idx[jj] * N + i];
            step_back(tp->rec + (long)r * QSP_REC, &pp, &ap, ybar, pb, ubs);
        }
        for (; jj >= start[s]; jj--)
            for (int i = 0; i < N; i++) ybar[i] += ob[(long)idx[jj] * N + i];
        memcpy(db + (long)s * N, ybar, sizeof(ybar));
        if (s > 0) {
            /* The boundary between segments s-1 and s: F_{s-1}(x-) - F_s(x+). */
            const double *xp = tp->seg_y + (long)s * N, *d = dose + ((long)pt * n_seg + s) * N;
            double xm[N], fm[N], fp[N], dot = 0.0;
            for (int i = 0; i < N; i++) xm[i] = xp[i] - d[i];
            f_eval(Bp[s], xm, &pp, u + ((long)pt * n_seg + s - 1) * N, fm);
            f_eval(Bp[s], xp, &pp, us, fp);
            for (int i = 0; i < N; i++) dot += ybar[i] * (fm[i] - fp[i]);
            Bb[s] = dot;
        }
    }
    for (int j = 0; j < n_ts; j++)
        if (op[j] < 0)
            for (int i = 0; i < N; i++) ybar[i] += ob[(long)j * N + i];
    memcpy(y0b, ybar, sizeof(ybar));
}

/* Freed record buffers are kept (up to qsp_tape_pool_limit bytes) and reused: a fresh
   buffer's pages fault in on first touch, which cost a third of the forward solve on
   pk2cmt (benchmarks/NOTES.md section 17). */
#include <stdatomic.h>
#define POOL_MAX 65536
static double *pool_rec[POOL_MAX];
static long pool_cap[POOL_MAX];
static int pool_n = 0;
static long long pool_bytes = 0, pool_limit = 0;
static atomic_flag pool_lock = ATOMIC_FLAG_INIT;
static void pool_acquire(void) { while (atomic_flag_test_and_set(&pool_lock)) {} }
static void pool_release(void) { atomic_flag_clear(&pool_lock); }

void qsp_tape_pool_limit(long long bytes) {
    pool_acquire();
    pool_limit = bytes;
    while (pool_n > 0 && pool_bytes > pool_limit) {
        pool_n--;
        pool_bytes -= (long long)sizeof(double) * QSP_REC * pool_cap[pool_n];
        free(pool_rec[pool_n]);
    }
    pool_release();
}

static void tape_free(Tape *tp) {
    if (!tp) return;
    long long b = (long long)sizeof(double) * QSP_REC * tp->cap;
    int kept = 0;
    if (tp->rec) {
        pool_acquire();
        if (pool_n < POOL_MAX && pool_bytes + b <= pool_limit) {
            pool_rec[pool_n] = tp->rec;
            pool_cap[pool_n++] = tp->cap;
            pool_bytes += b;
            kept = 1;
        }
        pool_release();
    }
    if (!kept) free(tp->rec);
    free(tp->seg_y);
    free(tp->seg_first);
    free(tp->save_g);
    free(tp);
}

static void tape_reuse(Tape *tp) {
    pool_acquire();
    if (pool_n > 0) {
        pool_n--;
        tp->rec = pool_rec[pool_n];
        tp->cap = pool_cap[pool_n];
        pool_bytes -= (long long)sizeof(double) * QSP_REC * tp->cap;
    }
    pool_release();
}

/* Forward with tapes: as qsp_solve, and tapes[pt] receives patient pt's record (NULL
   when it failed; free with qsp_tape_free). nbytes[pt]: the tape's size. */
void qsp_solve_tape(int n_pat, int n_seg, int n_ts, const double *params, const double *y0, const double *B,
                    const double *dose, const double *u, const double *ts, const int *owner, const int *invalid,
                    double rtol, double atol, int max_steps, double *out, int *status, long long *steps,
                    Tape **tapes, long long *nbytes) {
    for (int pt = 0; pt < n_pat; pt++) {
        Tape *tp = calloc(1, sizeof(Tape));
        if (tp) {
            tape_reuse(tp);
            tp->seg_y = malloc(sizeof(double) * N * (n_seg > 0 ? n_seg : 1));
            tp->seg_first = malloc(sizeof(int) * (n_seg + 1));
            tp->save_g = malloc(sizeof(int) * (n_ts > 0 ? n_ts : 1));
        }
        if (!tp || !tp->seg_y || !tp->seg_first || !tp->save_g) {  /* out of memory: plain solve */
            tape_free(tp);
            tp = NULL;
        }
        status[pt] = solve_patient(pt, n_seg, n_ts, params, y0, B, dose, u, ts, owner, invalid, rtol, atol,
                                   max_steps, 1, out, steps, tp, 0);
        if (status[pt] != 0 || !tp) { tape_free(tp); tp = NULL; if (status[pt] == 0) status[pt] = 2; }
        tapes[pt] = tp;
        nbytes[pt] = tp ? (long long)(sizeof(double) * (tp->cap * QSP_REC + (long)N * n_seg)
                                       + sizeof(int) * (n_seg + 1 + n_ts)) : 0;
    }
}

void qsp_tape_free(int n_pat, Tape **tapes) {
    for (int pt = 0; pt < n_pat; pt++) { tape_free(tapes[pt]); tapes[pt] = NULL; }
}

/* Backward for patients with tapes; zero cotangents for those without (failed: their
   outputs are NaN and flagged by status, so a loss that masks them stays finite). */
void qsp_adjoint(int n_pat, int n_seg, int n_ts, Tape **tapes, const double *params, const double *B,
                 const double *dose, const double *u, const int *owner, const double *obar, double *y0bar,
                 double *pbar, double *dbar, double *ubar, double *Bbar) {
    for (int pt = 0; pt < n_pat; pt++) {
        if (tapes[pt]) {
            adjoint_patient(tapes[pt], pt, n_seg, n_ts, params, B, dose, u, owner, obar, y0bar, pbar, dbar, ubar,
                            Bbar);
        } else {
            for (int i = 0; i < N; i++) y0bar[(long)pt * N + i] = 0.0;
            for (int i = 0; i < QSP_P; i++) pbar[(long)pt * QSP_P + i] = 0.0;
            for (long i = 0; i < (long)n_seg * N; i++) { dbar[(long)pt * n_seg * N + i] = 0.0; ubar[(long)pt * n_seg * N + i] = 0.0; }
            for (int i = 0; i <= n_seg; i++) Bbar[(long)pt * (n_seg + 1) + i] = 0.0;
        }
    }
}
