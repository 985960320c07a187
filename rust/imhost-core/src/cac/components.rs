//! Connected components of binary masks: 2-D per axial slice (the Agatston lesion) and 3-D (a
//! lesion as a radiologist points at it, for lesion-level detection scores).

/// Neighbourhood of a pixel in an axial slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity2d {
    /// Edge neighbours only (scipy.ndimage.label's default structure).
    Four,
    /// Edge and corner neighbours (the default: a diagonal chain of calcium is one lesion).
    #[default]
    Eight,
}

impl Connectivity2d {
    /// `4` or `8`.
    pub fn number(self) -> u8 {
        match self {
            Connectivity2d::Four => 4,
            Connectivity2d::Eight => 8,
        }
    }
}

/// The components of one `ni × nj` slice: a list of pixel indices (`i + j·ni`) per component, in
/// the order of their first pixel in memory (`i` fastest). `set` has `ni·nj` entries.
pub fn components_2d(set: &[bool], ni: usize, nj: usize, connectivity: Connectivity2d) -> Vec<Vec<usize>> {
    debug_assert_eq!(set.len(), ni * nj);
    let mut seen = vec![false; set.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..set.len() {
        if !set[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut members = Vec::new();
        while let Some(p) = stack.pop() {
            members.push(p);
            let (i, j) = ((p % ni) as i64, (p / ni) as i64);
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    if (di == 0 && dj == 0) || (connectivity == Connectivity2d::Four && di != 0 && dj != 0) {
                        continue;
                    }
                    let (x, y) = (i + di, j + dj);
                    if x < 0 || y < 0 || x >= ni as i64 || y >= nj as i64 {
                        continue;
                    }
                    let q = x as usize + y as usize * ni;
                    if set[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        members.sort_unstable();
        out.push(members);
    }
    out
}

/// 26-connected components of a 3-D mask (`i` fastest): a label per voxel (0 outside, 1..=n
/// inside, numbered in the order of their first voxel) and the count n.
pub fn components_3d(set: &[bool], dims: [usize; 3]) -> (Vec<u32>, u32) {
    let [ni, nj, nk] = dims;
    debug_assert_eq!(set.len(), ni * nj * nk);
    let mut labels = vec![0u32; set.len()];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..set.len() {
        if !set[start] || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (i, j, k) = ((p % ni) as i64, ((p / ni) % nj) as i64, (p / (ni * nj)) as i64);
            for dk in -1i64..=1 {
                for dj in -1i64..=1 {
                    for di in -1i64..=1 {
                        let (x, y, z) = (i + di, j + dj, k + dk);
                        if x < 0 || y < 0 || z < 0 || x >= ni as i64 || y >= nj as i64 || z >= nk as i64 {
                            continue;
                        }
                        let q = x as usize + (y as usize + z as usize * nj) * ni;
                        if set[q] && labels[q] == 0 {
                            labels[q] = next;
                            stack.push(q);
                        }
                    }
                }
            }
        }
    }
    (labels, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let nj = rows.len();
        let ni = rows[0].len();
        let set = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        (set, ni, nj)
    }

    #[test]
    fn diagonal_pixels_join_under_eight_connectivity_only() {
        let (set, ni, nj) = grid(&["#...", ".#..", "..#.", "...#", "##.."]);
        let eight = components_2d(&set, ni, nj, Connectivity2d::Eight);
        let four = components_2d(&set, ni, nj, Connectivity2d::Four);
        // Eight: the diagonal of four pixels, and the pair in the last row (which touches
        // nothing diagonally: (0,4),(1,4) vs (3,3) are two columns apart).
        assert_eq!(eight.len(), 2);
        assert_eq!(eight[0], vec![0, 5, 10, 15]);
        assert_eq!(eight[1], vec![16, 17]);
        // Four: every diagonal pixel alone, plus the pair.
        assert_eq!(four.len(), 5);
    }

    #[test]
    fn three_d_components_join_across_slices_by_corners() {
        let dims = [3, 3, 2];
        let mut set = vec![false; 18];
        set[0] = true; // (0,0,0)
        set[9 + 4] = true; // (1,1,1): corner neighbour of (0,0,0)
        set[8] = true; // (2,2,0): corner neighbour of (1,1,1)
        set[9 + 2] = true; // (2,0,1): edge neighbour of (1,1,1)? (dx 1, dy 1): yes, 26-connected
        let (labels, n) = components_3d(&set, dims);
        assert_eq!(n, 1);
        assert!(labels.iter().zip(&set).all(|(&l, &s)| (l == 1) == s));
        let mut apart = vec![false; 18];
        apart[0] = true;
        apart[2] = true; // two columns apart
        let (_, n) = components_3d(&apart, dims);
        assert_eq!(n, 2);
    }
}
