<h1><?php echo htmlspecialchars(acme_config('site_name')); ?></h1>
<p>Welcome. Use the search box above to find a page.</p>
