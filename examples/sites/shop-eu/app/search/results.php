<?php
// Runs a search and renders the results with the theme's search template.
$q = trim((string) ($_GET['q'] ?? ''));
$results = [];
if ($q !== '') {
    $stmt = acme_db()->prepare('SELECT id, title, excerpt FROM pages WHERE title LIKE ? ORDER BY title LIMIT 50');
    $stmt->execute(['%' . $q . '%']);
    $results = $stmt->fetchAll(PDO::FETCH_ASSOC);
}
?>
<h1>Search results for &ldquo;<?php echo $q; ?>&rdquo;</h1>
<?php require acme_template('search'); ?>
