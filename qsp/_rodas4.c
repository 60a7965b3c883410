/* qsp native backend: one patient's dosing segments solved by RODAS (Rodas4), in C.

   The model part (QSP_N states, QSP_P parameters, qsp_rhs and qsp_jac) is generated
   from the vector field's jaxpr by qsp/_codegen.py and pasted above this file; this
   part is the same for every model. It mirrors qsp/_rosenbrock.py (same tableau:
   Hairer & Wanner, Solving ODEs II, section IV.7, rodas.f METH = 1) and the JAX
   backend's segment loop in qsp/_simulate.py (boluses at segment starts, infusions as
   a constant input u_k, steps landing exactly on every save time), with a diffrax-like
   I controller (safety 0.9, factors in [0.2, 10], exponent 1/(error order + 1)) and
   Hairer's starting step. Status codes as qsp.Status. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double R_GAMMA = 0.25;
static const double R_ALPHA[6] = {0.0, 0.386, 0.21, 0.63, 1.0, 1.0};
static const double R_GI[6] = {0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0};
static const double R_A[6][5] = {
    {0, 0, 0, 0, 0},
    {0.1544000000000000e01, 0, 0, 0, 0},
    {0.9466785280815826e00, 0.2557011698983284e00, 0, 0, 0},
    {0.3314825187068521e01, 0.2896124015972201e01, 0.9986419139977817e00, 0, 0},
    {0.1221224509226641e01, 0.6019134481288629e01, 0.1253708332932087e02, -0.6878860361058950e00, 0},
    {0.1221224509226641e01, 0.6019134481288629e01, 0.1253708332932087e02, -0.6878860361058950e00, 1.0}};
static const double R_C[6][5] = {
    {0, 0, 0, 0, 0},
    {-0.5668800000000000e01, 0, 0, 0, 0},
    {-0.2430093356833875e01, -0.2063599157091915e00, 0, 0, 0},
    {-0.1073529058151375e00, -0.9594562251023355e01, -0.2047028614809616e02, 0, 0},
    {0.7496443313967647e01, -0.1024680431464352e02, -0.3399990352819905e02, 0.1170890893206160e02, 0},
    {0.8083246795921522e01, -0.7981132988064893e01, -0.3152159432874371e02, 0.1631930543123136e02,
     -0.6058818238834054e01}};

#define N QSP_N

/* fmin/fmax (the non-NaN operand wins) as inline code: without -ffinite-math-only the
   libm calls are not inlined, and they cost ~3% of a pk2cmt step. */
static inline double r4_fmin(double a, double b) { return (a < b || b != b) ? a : b; }
static inline double r4_fmax(double a, double b) { return (a > b || b != b) ? a : b; }

/* A patient: parameters, and what the model computes from them alone (once). */
typedef struct {
    const double *p;
    double qr[QSP_NQR], qj[QSP_NQJ];
} Patient;

/* The record of one patient's accepted steps, kept for the adjoint (qsp/_rodas4_adj.c):
   per step t, h, whether the sparse LU was used, y, the six stages k and the factors
   (QSP_REC doubles); per save time, how many steps had been recorded when it was
   written; per segment, its first record and its state after the dose. */
#ifdef QSP_SNNZ
#define QSP_REC (3 + 8 * N + QSP_SNNZ)
#else
#define QSP_REC (3 + 7 * N)
#endif
typedef struct {
    double *rec, *seg_y;
    long n_rec, cap;
    int *seg_first, *save_g;
} Tape;

static int tape_push(Tape *tp) {
    if (tp->n_rec == tp->cap) {
        long cap = tp->cap ? 2 * tp->cap : 256;
        double *r = realloc(tp->rec, sizeof(double) * QSP_REC * cap);
        if (!r) return 0;
        tp->rec = r;
        tp->cap = cap;
    }
    tp->n_rec++;
    return 1;
}

static void f_eval(double t, const double *y, const Patient *p, const double *u, double *dy) {
    qsp_rhs(&t, y, p->p, p->qr, dy);
    for (int i = 0; i < N; i++) dy[i] += u[i];
}

/* Root mean square of e_i / (atol + rtol max(|a_i|, |b_i|)) (diffrax's PID norm). */
static double scaled_rms(const double *e, const double *a, const double *b, double rtol, double atol) {
    double s = 0.0;
    for (int i = 0; i < N; i++) {
        double m = fabs(a[i]) > fabs(b[i]) ? fabs(a[i]) : fabs(b[i]);
        double r = e[i] / (atol + rtol * m);
        s += r * r;
    }
    return sqrt(s / N);
}

/* In-place LU with partial pivoting of the row-major N x N matrix W; 0 if singular. */
static int lu_factor(double *W, int *piv) {
    for (int k = 0; k < N; k++) {
        int p = k;
        double best = fabs(W[k * N + k]);
        for (int i = k + 1; i < N; i++) {
            double v = fabs(W[i * N + k]);
            if (v > best) { best = v; p = i; }
        }
        piv[k] = p;
        if (!(best > 0.0)) return 0;
        if (p != k)
            for (int j = 0; j < N; j++) { double t = W[k * N + j]; W[k * N + j] = W[p * N + j]; W[p * N + j] = t; }
        double inv = 1.0 / W[k * N + k];
        for (int i = k + 1; i < N; i++) {
            double l = W[i * N + k] * inv;
            if (l == 0.0) continue;
            W[i * N + k] = l;
            for (int j = k + 1; j < N; j++) W[i * N + j] -= l * W[k * N + j];
        }
    }
    return 1;
}

static void lu_solve(const double *W, const int *piv, double *b) {
    for (int k = 0; k < N; k++)
        if (piv[k] != k) { double t = b[k]; b[k] = b[piv[k]]; b[piv[k]] = t; }
    for (int i = 1; i < N; i++) {
        double s = b[i];
        for (int j = 0; j < i; j++) s -= W[i * N + j] * b[j];
        b[i] = s;
    }
    for (int i = N - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < N; j++) s -= W[i * N + j] * b[j];
        b[i] = s / W[i * N + i];
    }
}

static int all_finite(const double *v) {
    for (int i = 0; i < N; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* Hairer, Norsett & Wanner, Solving ODEs I, section II.4 (as diffrax's dt0=None). */
static double initial_step_p(double t0, const double *y0, const double *f0, const Patient *p, const double *u,
                             double rtol, double atol, double inv_order) {
    double sc[N], z[N], y1[N], f1[N], d0 = 0, d1 = 0, d2 = 0;
    for (int i = 0; i < N; i++) {
        sc[i] = atol + fabs(y0[i]) * rtol;
        d0 += (y0[i] / sc[i]) * (y0[i] / sc[i]);
        d1 += (f0[i] / sc[i]) * (f0[i] / sc[i]);
    }
    d0 = sqrt(d0 / N);
    d1 = sqrt(d1 / N);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    for (int i = 0; i < N; i++) y1[i] = y0[i] + h0 * f0[i];
    f_eval(t0 + h0, y1, p, u, f1);
    for (int i = 0; i < N; i++) {
        z[i] = (f1[i] - f0[i]) / sc[i];
        d2 += z[i] * z[i];
    }
    d2 = sqrt(d2 / N) / h0;
    double md = d1 > d2 ? d1 : d2;
    double h1 = (md <= 1e-15) ? r4_fmax(1e-6, h0 * 1e-3) : pow(0.01 / md, inv_order);
    double h = r4_fmin(100.0 * h0, h1);
    return isfinite(h) && h > 0 ? h : 1e-6;
}

static double initial_step(double t0, const double *y0, const double *f0, const Patient *p, const double *u,
                           double rtol, double atol) {
    return initial_step_p(t0, y0, f0, p, u, rtol, atol, 1.0 / 4.0);
}

/* One segment [ta, tb]: y advanced in place; save times ts[idx[0..m)] (each clipped
   into [ta, tb], non-decreasing) written to out. Returns a status code. */
static int segment(double ta, double tb, double *y, const Patient *p, const double *u, const double *ts,
                   const int *idx, int m, double *out, double rtol, double atol, int max_steps, int exact,
                   long long *steps, Tape *tape) {
    double f0[N], f1[N], ft[N], J[N * N], W[N * N], k[6][N], yi[N], fi[N], y1[N];
    int piv[N];
    int js = 0;
#define SAVE_TIME(j) r4_fmin(r4_fmax(ts[idx[j]], ta), tb)
#define SAVE_Y(j) do { memcpy(out + (long)idx[j] * N, y, sizeof(double) * N); \
                       if (tape) tape->save_g[idx[j]] = (int)tape->n_rec; } while (0)
    double t = ta;
    while (js < m && SAVE_TIME(js) <= t) { SAVE_Y(js); js++; }
    if (!(tb > ta)) {
        for (; js < m; js++) SAVE_Y(js);
        return 0;
    }
    f_eval(t, y, p, u, f0);
    memset(J, 0, sizeof(J)); /* qsp_jac writes only the structural non-zeros */
    memset(ft, 0, sizeof(ft));
    double h = r4_fmin(initial_step(t, y, f0, p, u, rtol, atol), tb - ta);
    int n_steps = 0, last_rejected = 0;
    while (t < tb) {
        if (n_steps >= max_steps) return 1;
        /* exact: land on the next save time; else step freely, interpolate the saves. */
        double target = (exact && js < m) ? SAVE_TIME(js) : tb;
        double hh = h;
        int clipped = 0;
        if (t + hh >= target) { hh = target - t; clipped = 1; }
        double tt = t;
        qsp_jac(&tt, y, p->p, p->qj, ft, J);
        double g = 1.0 / (R_GAMMA * hh);
        int sparse = 0, ok = 1;
#ifdef QSP_SNNZ
        /* The pattern's straight-line LU (qsp/_sparse_lu.py); dense pivoted LU when it
           refuses (a zero pivot or too much growth). */
        double a[QSP_SNNZ], dinv[N];
        sparse = qsp_sfactor(J, g, a, dinv);
#endif
        if (!sparse) {
            for (int i = 0; i < N * N; i++) W[i] = -J[i];
            for (int i = 0; i < N; i++) W[i * N + i] += g;
            ok = lu_factor(W, piv);
        }
        for (int s = 0; s < 6 && ok; s++) {
            if (s == 0) {
                memcpy(fi, f0, sizeof(double) * N);
            } else {
                for (int i = 0; i < N; i++) {
                    double v = y[i];
                    for (int j = 0; j < s; j++) v += R_A[s][j] * k[j][i];
                    yi[i] = v;
                }
                f_eval(t + R_ALPHA[s] * hh, yi, p, u, fi);
            }
            double ch[5], gh = R_GI[s] * hh;
            for (int j = 0; j < s; j++) ch[j] = R_C[s][j] / hh;
            for (int i = 0; i < N; i++) {
                double v = fi[i] + gh * ft[i];
                for (int j = 0; j < s; j++) v += ch[j] * k[j][i];
                k[s][i] = v;
            }
#ifdef QSP_SNNZ
            if (sparse) qsp_ssolve(a, dinv, k[s]); else
#endif
            lu_solve(W, piv, k[s]);
        }
        double err = INFINITY;
        if (ok) {
            for (int i = 0; i < N; i++) {
                double v = y[i];
                for (int j = 0; j < 5; j++) v += R_A[5][j] * k[j][i];
                y1[i] = v + k[5][i];
            }
            f_eval(t + hh, y1, p, u, f1);
            if (all_finite(y1) && all_finite(f1) && all_finite(k[5])) err = scaled_rms(k[5], y, y1, rtol, atol);
        }
        n_steps++;
        (*steps)++;
        /* err^(-1/4) by two square roots: libm pow cost 3% of a pk2cmt solve. */
        double factor = err == 0.0 ? 10.0 : 0.9 / sqrt(sqrt(err));
        factor = r4_fmin(10.0, r4_fmax(0.2, factor));
        if (err <= 1.0) {
            double t1 = clipped ? target : t + hh;
            if (tape) {
                if (!tape_push(tape)) return 2;
                double *r = tape->rec + (tape->n_rec - 1) * QSP_REC;
                r[0] = t; r[1] = hh; r[2] = sparse;
                memcpy(r + 3, y, sizeof(double) * N);
                memcpy(r + 3 + N, k, sizeof(double) * 6 * N);
#ifdef QSP_SNNZ
                if (sparse) { memcpy(r + 3 + 7 * N, a, sizeof(double) * QSP_SNNZ); memcpy(r + 3 + 7 * N + QSP_SNNZ, dinv, sizeof(double) * N); }
#endif
            }
            /* Cubic Hermite through (y0, f0) and (y1, f1), as qsp.Rodas4's dense output. */
            for (; !exact && js < m && SAVE_TIME(js) <= t1; js++) {
                double th = (SAVE_TIME(js) - t) / hh, th2 = th * th, th3 = th2 * th;
                double h00 = 2 * th3 - 3 * th2 + 1, h10 = (th3 - 2 * th2 + th) * hh, h01 = 3 * th2 - 2 * th3,
                       h11 = (th3 - th2) * hh;
                double *o = out + (long)idx[js] * N;
                for (int i = 0; i < N; i++) o[i] = h00 * y[i] + h10 * f0[i] + h01 * y1[i] + h11 * f1[i];
            }
            t = t1;
            memcpy(y, y1, sizeof(double) * N);
            memcpy(f0, f1, sizeof(double) * N);
            while (js < m && SAVE_TIME(js) <= t) { SAVE_Y(js); js++; }
            if (last_rejected) factor = r4_fmin(factor, 1.0);
            double next = hh * factor;
            /* A step shortened to land on a save time says nothing about the scale of
               the solution: keep the step the controller wanted before the clip. */
            h = clipped ? r4_fmax(next, h) : next;
            last_rejected = 0;
        } else {
            h = hh * factor;
            last_rejected = 1;
        }
        if (!(h > 1e-14 * r4_fmax(1.0, fabs(t)))) return 2;
    }
    for (; js < m; js++) SAVE_Y(js);
    return 0;
#undef SAVE_TIME
#undef SAVE_Y
}

/* Save times grouped by owning segment, in time order (a counting sort): segment s
   owns idx[start[s] .. start[s+1]). */
static void group_saves(int n_seg, int n_ts, const int *op, int *idx, int *start) {
    for (int s = 0; s <= n_seg; s++) start[s] = 0;
    for (int j = 0; j < n_ts; j++)
        if (op[j] >= 0) start[op[j] + 1]++;
    for (int s = 0; s < n_seg; s++) start[s + 1] += start[s];
    int fill[n_seg > 0 ? n_seg : 1];
    for (int s = 0; s < n_seg; s++) fill[s] = start[s];
    for (int j = 0; j < n_ts; j++)
        if (op[j] >= 0) idx[fill[op[j]]++] = j;
}

static int segment_bdf(double ta, double tb, double *y, const Patient *p, const double *u, const double *ts,
                       const int *idx, int m, double *out, double rtol, double atol, int max_steps,
                       long long *steps);  /* qsp/_bdf.c, pasted after this file */

/* One patient (row pt of every array) by Rodas4 (method 0; with a tape, its steps are
   recorded) or BDF (method 1, no tape). */
static int solve_patient(int pt, int n_seg, int n_ts, const double *params, const double *y0, const double *B,
                         const double *dose, const double *u, const double *ts, const int *owner, const int *invalid,
                         double rtol, double atol, int max_steps, int exact, double *out, long long *steps,
                         Tape *tape, int method) {
    int idx[n_ts > 0 ? n_ts : 1], start[n_seg + 1];
    double y[N];
    Patient pp;
    pp.p = params + (long)pt * QSP_P;
    const double *tp = ts + (long)pt * n_ts;
    const int *op = owner + (long)pt * n_ts;
    double *yo = out + (long)pt * n_ts * N;
    steps[pt] = 0;
    memcpy(y, y0 + (long)pt * N, sizeof(double) * N);
    for (int j = 0; j < n_ts; j++) memcpy(yo + (long)j * N, y, sizeof(double) * N);
    if (tape) for (int j = 0; j < n_ts; j++) tape->save_g[j] = -1;
    if (invalid[pt]) return 3;
    qsp_rhs_pre(pp.p, pp.qr);
    qsp_jac_pre(pp.p, pp.qj);
    group_saves(n_seg, n_ts, op, idx, start);
    int st = 0;
    for (int s = 0; s < n_seg && st == 0; s++) {
        const double *d = dose + ((long)pt * n_seg + s) * N;
        for (int i = 0; i < N; i++) y[i] += d[i];
        if (tape) { tape->seg_first[s] = (int)tape->n_rec; memcpy(tape->seg_y + (long)s * N, y, sizeof(double) * N); }
        double ta = B[(long)pt * (n_seg + 1) + s], tb = B[(long)pt * (n_seg + 1) + s + 1];
        const double *us = u + ((long)pt * n_seg + s) * N;
        if (method == 1)
            st = segment_bdf(ta, tb, y, &pp, us, tp, idx + start[s], start[s + 1] - start[s], yo, rtol, atol,
                             max_steps, steps + pt);
        else
            st = segment(ta, tb, y, &pp, us, tp, idx + start[s], start[s + 1] - start[s], yo, rtol, atol,
                         max_steps, exact, steps + pt, tape);
    }
    if (tape) tape->seg_first[n_seg] = (int)tape->n_rec;
    return st;
}

/* Patients [0, n_pat): each row of every array is one patient (see qsp/_native.py). */
void qsp_solve(int n_pat, int n_seg, int n_ts, const double *params, const double *y0, const double *B,
               const double *dose, const double *u, const double *ts, const int *owner, const int *invalid,
               double rtol, double atol, int max_steps, int exact, double *out, int *status, long long *steps,
               int method) {
    for (int pt = 0; pt < n_pat; pt++)
        status[pt] = solve_patient(pt, n_seg, n_ts, params, y0, B, dose, u, ts, owner, invalid, rtol, atol,
                                   max_steps, exact, out, steps, NULL, method);
}
