/*
 * vocab_impl.h — the passes of vocab.h for one vector width, included by vocab.c
 * once per kernel path (no include guard). It expects:
 *   VP      the path's suffix (avx512, avx2, portable)
 *   VL      lanes of fp32 per vector (16, 8, 4)
 *   VANY(m) the OR of all lanes of mask vector m, into lane 0 (shuffles; GCC 12
 *           lowered a comparison lane by lane when its mask went through memory)
 * Vectors are loaded and stored with memcpy, compared only against vectors (a
 * comparison with a plain float was lowered lane by lane too), and never combined
 * by `&` of two comparisons for a branch (the same).
 */
#define VCAT2(a, b) a##_##b
#define VCAT(a, b) VCAT2(a, b)
#define VN(name) VCAT(name, VP)

typedef float VN(vf) __attribute__((vector_size(4 * VL)));
typedef int32_t VN(vi) __attribute__((vector_size(4 * VL)));
typedef uint32_t VN(vu) __attribute__((vector_size(4 * VL)));
#define VF VN(vf)
#define VI VN(vi)
#define VU VN(vu)
#define VSET(x) ((VF){0} + (x))

static inline __attribute__((always_inline)) int VN(any)(const VI *mask)
{
    VI m = *mask;
    VANY(m);
    return m[0] != 0;
}

static float VN(max)(const float *v, int n)
{
    VF m[4], x;
    for (int a = 0; a < 4; a++)
        m[a] = VSET(-FLT_MAX);
    int i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL)         /* four running maxima: no comparison waits */
        for (int a = 0; a < 4; a++) {
            memcpy(&x, v + i + VL * a, sizeof x);
            VI gt = x > m[a];
            m[a] = (VF)(((VI)x & gt) | ((VI)m[a] & ~gt));
        }
    float mx = -FLT_MAX;
    for (int a = 0; a < 4; a++)
        for (int k = 0; k < VL; k++)
            mx = m[a][k] > mx ? m[a][k] : mx;
    for (; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    return mx;
}

static int VN(first_equal)(const float *v, int n, float x)
{
    const VF xv = VSET(x);
    int i = 0;
    for (; i + VL <= n; i += VL) {
        VF y;
        memcpy(&y, v + i, sizeof y);
        VI eq = y == xv;
        if (VN(any)(&eq))
            break;
    }
    for (; i < n; i++)
        if (v[i] == x)
            return i;
    return -1;
}

static int VN(next_above)(const float *v, int from, int n, float t)
{
    const VF tv = VSET(t);
    int i = from;
    for (; i < n && i % VL; i++)
        if (v[i] > t)
            return i;
    for (; i + VL <= n; i += VL) {
        VF y;
        memcpy(&y, v + i, sizeof y);
        VI gt = y > tv;
        if (VN(any)(&gt))
            break;
    }
    for (; i < n; i++)
        if (v[i] > t)
            return i;
    return n;
}

/* e^x for x <= 0, VL lanes, in place. Cody-Waite reduction x = n·ln2 + r,
 * |r| <= ln2/2, then a degree-6 Taylor polynomial: relative error under 3e-7, close
 * to expf's; the same bits on every path. Below -87 (and for NaN) it gives ~2^-126
 * instead of a denormal: the terms are summed next to a term of 1. Above 0 (a
 * maximum that was not one: an infinite or NaN logit) it gives 1, never an integer
 * overflow. */
static inline __attribute__((always_inline)) void VN(exp_nonpositive)(VF *v)
{
    VF x = *v;
    const VF lo = VSET(-87.0f);
    VI below = ~(x >= lo);                      /* NaN too */
    x = (VF)(((VI)x & ~below) | ((VI)lo & below));
    x = (VF)((VI)x & ~(x > VSET(0.0f)));
    VF n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    VF r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    VF p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    *v = (VF)((VI)p + __builtin_convertvector(n, VI) * (1 << 23));
}

static double VN(sum_exp)(const float *v, int n, float mx, float scale, float *out, double *block_mass)
{
    double sum = 0;
    for (int b0 = 0; b0 < n; b0 += VOCAB_BLOCK) {
        int b1 = n - b0 < VOCAB_BLOCK ? n : b0 + VOCAB_BLOCK, i = b0;
        VF part = {0}, x, e;
        for (; i + VL <= b1; i += VL) {
            memcpy(&x, v + i, sizeof x);
            e = (x - mx) * scale;
            VN(exp_nonpositive)(&e);
            part += e;
            if (out)
                memcpy(out + i, &e, sizeof e);
        }
        double block = 0;
        for (int k = 0; k < VL; k++)
            block += part[k];
        if (i < b1) {                           /* the tail, padded with terms dropped */
            x = (VF){0};
            memcpy(&x, v + i, sizeof(float) * (size_t)(b1 - i));
            e = (x - mx) * scale;
            VN(exp_nonpositive)(&e);
            for (int k = 0; k < b1 - i; k++) {
                block += e[k];
                if (out)
                    out[i + k] = e[k];
            }
        }
        if (block_mass)
            block_mass[b0 / VOCAB_BLOCK] = block;
        sum += block;
    }
    return sum;
}

static void VN(floor_stats)(const float *e, int n, const float *t, int *count, double *mass)
{
    VI c[VOCAB_FLOORS] = {{0}};
    VF tv[VOCAB_FLOORS];
    for (int f = 0; f < VOCAB_FLOORS; f++)
        mass[f] = 0, tv[f] = VSET(t[f]);
    for (int b0 = 0; b0 < n; b0 += VOCAB_BLOCK) {
        int b1 = n - b0 < VOCAB_BLOCK ? n : b0 + VOCAB_BLOCK, i = b0;
        VF m[VOCAB_FLOORS] = {{0}}, x;
        for (; i + VL <= b1; i += VL) {
            memcpy(&x, e + i, sizeof x);
#pragma GCC unroll 6                            /* the sums stay in registers */
            for (int f = 0; f < VOCAB_FLOORS; f++) {
                VI in = x >= tv[f];
                c[f] -= in;
                m[f] += (VF)((VI)x & in);
            }
        }
        for (int f = 0; f < VOCAB_FLOORS; f++) {
            for (int k = 0; k < VL; k++)
                mass[f] += m[f][k];
            for (int j = i; j < b1; j++)
                if (e[j] >= t[f])
                    mass[f] += e[j], c[f][0]++;
        }
    }
    for (int f = 0; f < VOCAB_FLOORS; f++) {
        count[f] = 0;
        for (int k = 0; k < VL; k++)
            count[f] += c[f][k];
    }
}

/* VL at a time: skipped when none is at least the floor (most of a peaked
 * distribution's vocabulary), else their slots computed in lanes, so that no
 * branch depends on a weight. */
static void VN(count_groups)(const float *e, int n, float floor, uint32_t base, int shift, uint32_t *count,
                             double *mass)
{
    const VF fv = VSET(floor);
    VU copy;
    for (int k = 0; k < VL; k++)
        copy[k] = (uint32_t)(k % VOCAB_COPIES);
    int i = 0;
    for (; i + VL <= n; i += VL) {
        VF x;
        memcpy(&x, e + i, sizeof x);
        VI in = x >= fv;
        if (!VN(any)(&in))
            continue;
        VU g = ((VU)x - base) >> (uint32_t)shift;
        VI top = g < VOCAB_GROUPS - 1;
        g = (g & (VU)top) | ((VOCAB_GROUPS - 1) & (VU)~top);
        g = (g & (VU)in) | (VOCAB_GROUPS & (VU)~in);
        g = g * VOCAB_COPIES + copy;
        uint32_t slot[VL];
        memcpy(slot, &g, sizeof slot);
        for (int j = 0; j < VL; j++) {
            count[slot[j]]++;
            mass[slot[j]] += e[i + j];
        }
    }
    for (; i < n; i++) {
        uint32_t k, g = VOCAB_GROUPS;
        memcpy(&k, e + i, sizeof k);
        if (e[i] >= floor) {
            g = (k - base) >> shift;
            g = g < VOCAB_GROUPS - 1 ? g : VOCAB_GROUPS - 1;
        }
        count[g * VOCAB_COPIES]++;
        mass[g * VOCAB_COPIES] += e[i];
    }
}

static int VN(take_range)(const float *e, int n, uint32_t lo, uint32_t span, int32_t *out)
{
    int m = 0, i = 0;
    for (; i + VL <= n; i += VL) {
        VU k;
        memcpy(&k, e + i, sizeof k);
        VI in = (k - lo) < span;                /* one unsigned comparison per lane */
        if (!VN(any)(&in))
            continue;
        for (int j = i; j < i + VL; j++) {
            uint32_t kj;
            memcpy(&kj, e + j, sizeof kj);
            if (kj - lo < span)
                out[m++] = j;
        }
    }
    for (; i < n; i++) {
        uint32_t k;
        memcpy(&k, e + i, sizeof k);
        if (k - lo < span)
            out[m++] = i;
    }
    return m;
}

const vocab_kernels VN(vocab) = {
    .max = VN(max), .first_equal = VN(first_equal), .next_above = VN(next_above), .sum_exp = VN(sum_exp),
    .floor_stats = VN(floor_stats), .count_groups = VN(count_groups), .take_range = VN(take_range),
};

#undef VF
#undef VI
#undef VU
#undef VSET
#undef VN
#undef VCAT
#undef VCAT2
